/** Configurations the daemon must refuse, each with a one-line message naming the key. */
import { afterAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { serverToml } from "../support/config-toml.ts";
import { Daemon, daemonCommand, runToExit, tempDir } from "../support/daemon.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function startWith(toml: string, dir = tempDir()) {
  dirs.push(dir);
  const path = join(dir, "ippool.toml");
  writeFileSync(path, `${serverToml({ listen: "127.0.0.1:0", socket: "", dataDir: dir })}\n${toml}`);
  return runToExit(["--config", path]);
}

const pool = (name: string, cidr: string, extra = "") => `[[pools]]\nname = "${name}"\ncidr = "${cidr}"\n${extra}\n`;

describe("a bad config file refuses to start with exit 2", () => {
  test.each([
    ["overlapping pools", pool("a", "10.0.0.0/16") + pool("b", "10.0.128.0/24"), "pools[1].cidr"],
    ["a gateway outside its CIDR", pool("a", "10.0.0.0/24", 'gateway = "10.0.1.1"'), "pools[0].gateway"],
    ["the broadcast address as gateway", pool("a", "10.0.0.0/24", 'gateway = "10.0.0.255"'), "pools[0].gateway"],
    [
      "a malformed reserved range",
      pool("a", "10.0.0.0/24", 'reserved = ["10.0.0.9-10.0.0.2"]'),
      "pools[0].reserved[0]",
    ],
    ["a reserved range outside the pool", pool("a", "10.0.0.0/24", 'reserved = ["10.0.1.1"]'), "pools[0].reserved[0]"],
    ["a CIDR with host bits set", pool("a", "10.0.0.1/24"), "pools[0].cidr"],
    ["a prefix shorter than /8", pool("a", "10.0.0.0/7"), "pools[0].cidr"],
    ["an unknown strategy", pool("a", "10.0.0.0/24", 'strategy = "random"'), "pools[0].strategy"],
    ["an unknown key", pool("a", "10.0.0.0/24", "colour = 1"), "pools[0].colour"],
    ["a duplicate pool name", pool("a", "10.0.0.0/24") + pool("a", "10.1.0.0/24"), "pools[1].name"],
    [
      "two default pools",
      pool("a", "10.0.0.0/24", "default = true") + pool("b", "10.1.0.0/24", "default = true"),
      "pools[1].default",
    ],
    ["no pools at all", "", "pools"],
    [
      "an elastic IP pool overlapping a VM pool",
      `${pool("a", "10.0.0.0/16")}[[eip_pools]]\nname = "public"\ncidr = "10.0.5.0/24"\n`,
      "eip_pools[0].cidr",
    ],
    [
      "a project key that is not a SHA-256",
      `${pool("a", "10.0.0.0/24")}[[projects]]\nname = "p"\napi_key_sha256 = "secret"\n`,
      "projects[0].api_key_sha256",
    ],
    [
      "two projects with one key",
      `${pool("a", "10.0.0.0/24")}[[projects]]\nname = "p"\napi_key_sha256 = "${"a".repeat(64)}"\n[[projects]]\nname = "q"\napi_key_sha256 = "${"A".repeat(64)}"\n`,
      "projects[1].api_key_sha256",
    ],
    [
      "a host without a pinned key",
      `${pool("a", "10.0.0.0/24")}[[hosts]]\nname = "hv1"\naddress = "10.0.0.11"\nuser = "ippool"\nprivate_key = "/k"\npublic_interface = "eth0"\n`,
      "hosts[0].host_key",
    ],
    ["a TOML syntax error", '[[pools]]\nname = "a\n', "ippool.toml:"],
  ])("%s", async (_what, toml, key) => {
    const result = await startWith(toml);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(key);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("a missing config file names the path", async () => {
    const result = await runToExit(["--config", "/nonexistent/ippool.toml"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("/nonexistent/ippool.toml");
  });
});

describe("a config that contradicts the stored state refuses to start", () => {
  async function withAllocation(poolToml: string, ip?: string): Promise<string> {
    const dir = tempDir();
    dirs.push(dir);
    const daemon = await Daemon.start({ dir, config: poolToml });
    expect((await daemon.post("/api/v1/ip/allocate", { vm_id: "held", ...(ip ? { ip } : {}) })).status).toBe(201);
    expect(await daemon.stop()).toBe(0);
    return dir;
  }

  test("moving a pool to another network while it has allocations", async () => {
    const dir = await withAllocation(pool("vms", "10.0.0.0/24"));
    const result = await startWith(pool("vms", "10.0.4.0/23"), dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("pools.vms.cidr changed from 10.0.0.0/24 to 10.0.4.0/23");
  });

  test("shrinking a pool past an allocated address", async () => {
    const dir = await withAllocation(pool("vms", "10.0.0.0/23"), "10.0.1.7");
    const result = await startWith(pool("vms", "10.0.0.0/24"), dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("pools.vms.cidr shrinks from 10.0.0.0/23 to 10.0.0.0/24, but 10.0.1.7");
  });

  test("growing a pool with allocations keeps them (same network address, shorter prefix)", async () => {
    const dir = await withAllocation(pool("vms", "10.0.0.0/24"), "10.0.0.77");
    const grown = await Daemon.start({ dir, config: pool("vms", "10.0.0.0/23") });
    expect((await grown.json("/api/v1/ip/held")).body).toMatchObject({ ip: "10.0.0.77", network: "10.0.0.0/23" });
    expect((await grown.post("/api/v1/ip/allocate", { vm_id: "upper", ip: "10.0.1.200" })).status).toBe(201);
    expect(await grown.stop()).toBe(0);
  });

  test("reserving an address that is allocated", async () => {
    const dir = await withAllocation(pool("vms", "10.0.0.0/24"), "10.0.0.50");
    const result = await startWith(pool("vms", "10.0.0.0/24", 'reserved = ["10.0.0.40-10.0.0.60"]'), dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("10.0.0.50 is now reserved");
  });

  test("removing a pool that still has allocations", async () => {
    const dir = await withAllocation(pool("vms", "10.0.0.0/24"));
    const result = await startWith(pool("other", "10.1.0.0/24"), dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('pool "vms"');
  });

  test("changing the CIDR of an empty pool is accepted", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const first = await Daemon.start({ dir, config: pool("vms", "10.0.0.0/24") });
    expect(await first.stop()).toBe(0);
    const second = await Daemon.start({ dir, config: pool("vms", "10.5.0.0/16") });
    const { body } = await second.post("/api/v1/ip/allocate", { vm_id: "new" });
    expect(body.network).toBe("10.5.0.0/16");
    expect(await second.stop()).toBe(0);
  });

  test("a pool as large as /8 starts and allocates", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const daemon = await Daemon.start({ dir, config: pool("huge", "10.0.0.0/8") });
    const { body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "first", ip: "10.255.255.254" });
    expect(body.ip).toBe("10.255.255.254");
    expect((await daemon.json("/api/v1/ip/stats")).body).toMatchObject({ total: 16777213, allocated: 1 });
    expect(await daemon.stop()).toBe(0);
  });
});

describe("the shipped example config", () => {
  test("starts and serves its pools", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const example = join(import.meta.dir, "../../docs/ippool.example.toml");
    const proc = Bun.spawn(
      [
        ...daemonCommand(),
        "--config",
        example,
        "--listen",
        "127.0.0.1:0",
        "--socket",
        join(dir, "s.sock"),
        "--data-dir",
        dir,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    const reader = proc.stdout.getReader();
    let output = "";
    while (!output.includes("started")) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`example config did not start: ${await new Response(proc.stderr).text()}`);
      output += new TextDecoder().decode(value);
    }
    const port = /tcp=127\.0\.0\.1:(\d+)/.exec(output)?.[1];
    const pools = (await (await fetch(`http://127.0.0.1:${port}/api/v1/pools`)).json()) as { name: string }[];
    expect(pools.map((p) => p.name)).toEqual(["vms", "storage", "p2p"]);
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });
});
