/** The executable as a client: commands over the socket and over TCP, output and exit codes. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configToml } from "../support/config-toml.ts";
import { BINARY, Daemon } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";

const KEY = "cli-test-key";
let daemon: Daemon;

beforeAll(async () => {
  daemon = await Daemon.start({
    config: configToml({
      pools: [{ name: "vms", cidr: "10.30.0.0/24", gateway: "10.30.0.1" }],
      eipPools: { public: "100.64.0.0/24" },
      projects: [{ name: "acme", apiKey: KEY }],
    }),
  });
});
afterAll(async () => {
  await daemon.dispose();
});

function ippool(...args: string[]) {
  return sh([BINARY, ...args], { allowFail: true, env: { PATH: process.env.PATH ?? "" } });
}
const onSocket = () => ["--socket", daemon.socket];

describe("pool commands over the socket", () => {
  test("allocate prints the allocation and exits 0; --json prints the daemon's answer", async () => {
    const human = await ippool("allocate", "vm-1", "--hostname", "web-1", "--host", "hv1", ...onSocket());
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ip\s+10\.30\.0\.2$/m);
    expect(human.stdout).toMatch(/^hostname\s+web-1$/m);
    const json = await ippool("allocate", "vm-1", "--json", ...onSocket());
    expect(JSON.parse(json.stdout)).toMatchObject({ ip: "10.30.0.2", vm_id: "vm-1", host: "hv1" });
  });

  test("list, show, stats and pools print tables a person can read", async () => {
    const list = await ippool("list", ...onSocket());
    expect(list.stdout.split("\n")[0]).toMatch(/^IP\s+VM_ID\s+NAME\s+HOSTNAME\s+HOST\s+POOL\s+CREATED_AT$/);
    expect(list.stdout).toMatch(/^10\.30\.0\.2\s+vm-1\s+-\s+web-1\s+hv1\s+vms\s/m);
    expect((await ippool("show", "vm-1", ...onSocket())).stdout).toMatch(/^vm_id\s+vm-1$/m);
    expect((await ippool("stats", ...onSocket())).stdout).toMatch(/^usage\s+0\.4%$/m);
    expect((await ippool("pools", ...onSocket())).stdout).toMatch(
      /^vms\s+10\.30\.0\.0\/24\s+10\.30\.0\.1\s+next-fit\s+1\s+252\s+0\.4%$/m,
    );
  });

  test("release and release-ip free addresses", async () => {
    await ippool("allocate", "vm-2", ...onSocket());
    expect((await ippool("release", "vm-2", ...onSocket())).code).toBe(0);
    const { stdout } = await ippool("allocate", "vm-3", "--json", ...onSocket());
    const released = await ippool("release-ip", JSON.parse(stdout).ip, ...onSocket());
    expect(released.code).toBe(0);
    expect(released.stdout).toContain("vm-3");
  });

  test("gc with no hosts configured: nothing to compare against, nothing released, exit 0", async () => {
    await ippool("allocate", "vm-gc", ...onSocket());
    for (const args of [["gc", "--dry-run"], ["gc"]]) {
      const human = await ippool(...args, ...onSocket());
      expect(human.code).toBe(0);
      expect(human.stdout).toBe(
        "no leaked allocations: no hypervisor hosts are configured: there is nothing to compare allocations against\n",
      );
    }
    const json = JSON.parse((await ippool("gc", "--json", ...onSocket())).stdout);
    expect(json).toMatchObject({ grace_period_s: 900, hosts: [], leaks: [], released: [] });
    expect(json.reason).toContain("no hypervisor hosts");
    expect((await ippool("show", "vm-gc", ...onSocket())).code).toBe(0);
    expect((await ippool("gc", "--pool", "nosuch", ...onSocket())).code).toBe(1);
    expect((await ippool("gc", "extra", ...onSocket())).code).toBe(2);
    await ippool("release", "vm-gc", ...onSocket());
  });

  test("health asks GET /api/v1/health", async () => {
    const result = await ippool("health", ...onSocket());
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^status\s+healthy$/m);
  });

  test("a refused request exits 1 and prints the daemon's error code", async () => {
    const result = await ippool("show", "nobody", ...onSocket());
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("ippool: NOT_FOUND: IP not found\n");
  });

  test("an unreachable daemon exits 3", async () => {
    const result = await ippool("list", "--socket", `${daemon.dir}/nothing.sock`);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain("cannot reach the daemon");
  });

  test.each([
    [["allocate"]],
    [["allocate", "a", "b"]],
    [["list", "--frob"]],
    [["eip", "frob"]],
    [["completion", "zsh"]],
  ])("%p is a usage error: exit 2", async (args) => {
    expect((await ippool(...args, ...onSocket())).code).toBe(2);
  });
});

describe("elastic IPs", () => {
  test("over the socket with --project, and over TCP with --url and --api-key", async () => {
    const created = await ippool("eip", "allocate", "--project", "acme", "--json", ...onSocket());
    expect(created.code).toBe(0);
    const eip = JSON.parse(created.stdout);
    const listed = await ippool("eip", "list", "--url", daemon.baseUrl, "--api-key", KEY);
    expect(listed.stdout).toMatch(
      new RegExp(`^${eip.id}\\s+${eip.public_ip.replaceAll(".", "\\.")}\\s+allocated`, "m"),
    );
    const denied = await ippool("eip", "list", "--url", daemon.baseUrl, "--api-key", "wrong");
    expect(denied.code).toBe(1);
    expect(denied.stderr).toStartWith("ippool: UNAUTHORIZED:");
    const released = await ippool("eip", "release", eip.id, "--url", daemon.baseUrl, "--api-key", KEY, "--json");
    expect(JSON.parse(released.stdout).state).toBe("released");
  });

  test("the URL and key may come from IPPOOL_URL and IPPOOL_API_KEY", async () => {
    const proc = Bun.spawn([BINARY, "eip", "list", "--json"], {
      stdout: "pipe",
      env: { IPPOOL_URL: daemon.baseUrl, IPPOOL_API_KEY: KEY },
    });
    expect(JSON.parse(await new Response(proc.stdout).text())).toEqual([]);
    expect(await proc.exited).toBe(0);
  });
});

describe("the executable itself", () => {
  test("--version prints the version", async () => {
    expect((await ippool("--version")).stdout).toMatch(/^ippool \d+\.\d+\.\d+\n$/);
  });

  test("completion bash prints a script bash accepts", async () => {
    const script = (await ippool("completion", "bash")).stdout;
    expect(script).toContain("complete -F _ippool ippool");
    const check = Bun.spawn(["bash", "-n"], { stdin: new Blob([script]), stderr: "pipe" });
    expect(await check.exited).toBe(0);
  });
});
