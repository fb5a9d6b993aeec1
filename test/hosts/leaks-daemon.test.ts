/**
 * Leak detection end to end: the compiled daemon runs in the testbed's daemon namespace and asks
 * real OpenSSH servers for their libvirt test-driver domains (`virsh list --all --uuid --name`).
 * The test talks to it over its Unix socket, with curl-like requests and with the compiled binary
 * as the client (`ippool gc --socket …`), as an operator would.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { configToml } from "../support/config-toml.ts";
import { BINARY, Daemon } from "../support/daemon.ts";
import { eventually, sh } from "../support/processes.ts";
import { parseExposition, promtool, sampleValue } from "../support/prometheus.ts";
import { Testbed } from "../support/testbed.ts";

/** Seconds an allocation is left alone; short, so the suite can watch allocations come of age. */
const GRACE_S = 3;
const STRAY_UUID = randomUUID();
let bed: Testbed;
let daemon: Daemon;

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", vms: [{ name: "web-1" }], bareDomains: [{ name: "stopped-1", state: "shut off" }] },
      { name: "hv2", vms: [{ name: "db-1" }] },
    ],
  });
  daemon = await Daemon.start({
    prefix: bed.daemonNetnsPrefix(),
    config: configToml({
      leaks: { gracePeriodS: GRACE_S },
      pools: [{ name: "vms", cidr: "10.99.0.0/24" }],
      hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 3000 }),
    }),
  });
  const connected = async () => bed.hosts.every((h) => daemon.logs.includes(`host connected host=${h.name}`));
  expect(await eventually(connected, 10_000)).toBe(true);
}, 60_000);

afterAll(async () => {
  if (process.env.SHOW_DAEMON_LOGS) console.log(daemon?.logs);
  await daemon?.dispose();
  await bed?.destroy();
});

const call = (method: string, path: string) => daemon.json(path, { method, via: "unix" });
const allocate = async (vm_id: string, host?: string) => {
  const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id, ...(host ? { host } : {}) }, "unix");
  expect(status).toBe(201);
  return body;
};
const allocated = async () =>
  ((await call("GET", "/api/v1/ip/allocations")).body as { vm_id: string }[]).map((a) => a.vm_id).sort();

/** The compiled binary as a client, over the daemon's socket (a file, so it crosses namespaces). */
function ippool(...args: string[]) {
  return sh([BINARY, ...args, "--socket", daemon.socket], { allowFail: true, env: { PATH: process.env.PATH ?? "" } });
}

describe("leak detection against real hosts", () => {
  // Existing domains, by name and by UUID (as the hook records them), one recorded on the wrong
  // host (migrated), one shut off; and three vm_ids no host has.
  const existing = () => [
    ["web-1", "hv1"],
    [bed.vm("db-1").uuid, "hv2"],
    [String(bed.host("hv1").bareDomains[0]?.uuid).toUpperCase(), "hv2"],
    ["stopped-1", undefined],
  ];
  const stray = ["ghost-1", STRAY_UUID, "ghost-2"];

  test("young allocations are protected by the grace period; once old enough, exactly the strays are reported", async () => {
    for (const [vm, host] of existing()) await allocate(vm as string, host);
    await allocate("ghost-1", "hv1");
    await allocate(STRAY_UUID, "hv2");
    await allocate("ghost-2");
    const started = Date.now();

    const young = await call("GET", "/api/v1/leaks");
    expect(Date.now() - started).toBeLessThan(GRACE_S * 1000);
    expect(young.status).toBe(200);
    expect(young.body.leaks).toEqual([]);
    expect(young.body.grace_period_s).toBe(GRACE_S);
    expect(young.body.hosts).toEqual([
      { name: "hv1", domains: 2 },
      { name: "hv2", domains: 1 },
    ]);
    const gc = await ippool("gc");
    expect(gc.code).toBe(0);
    expect(gc.stdout).toContain("no leaked allocations");
    expect(await allocated()).toHaveLength(7);

    await Bun.sleep(GRACE_S * 1000 - (Date.now() - started) + 100);
    const { status, body } = await call("GET", "/api/v1/leaks");
    expect(status).toBe(200);
    expect(body.leaks.map((leak: { vm_id: string }) => leak.vm_id).sort()).toEqual([...stray].sort());
    expect(body.released).toBeUndefined();
    const ghost = body.leaks.find((leak: { vm_id: string }) => leak.vm_id === "ghost-1");
    expect(ghost).toMatchObject({ pool: "vms", host: "hv1", network: "10.99.0.0/24" });
    expect(ghost.age_s).toBeGreaterThanOrEqual(GRACE_S);
  }, 20_000);

  test("gc --dry-run lists them and releases nothing", async () => {
    const dry = await ippool("gc", "--dry-run");
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/^checked hv1 \(2 domains\), hv2 \(1 domains\); grace period 3s$/m);
    expect(dry.stdout).toMatch(/^IP\s+VM_ID\s+POOL\s+HOST\s+AGE$/m);
    expect(dry.stdout).toMatch(/^10\.99\.0\.\d+\s+ghost-1\s+vms\s+hv1\s+\d+s$/m);
    expect(dry.stdout).toMatch(new RegExp(`^10\\.99\\.0\\.\\d+\\s+${STRAY_UUID}\\s+vms\\s+hv2\\s+\\d+s$`, "m"));
    expect(dry.stdout).toMatch(/^10\.99\.0\.\d+\s+ghost-2\s+vms\s+-\s+\d+s$/m);
    expect(dry.stdout).toContain("dry run: nothing released");
    const json = JSON.parse((await ippool("gc", "--dry-run", "--json")).stdout);
    expect(json.leaks).toHaveLength(3);
    expect(json.released).toBeUndefined();
    expect(await allocated()).toHaveLength(7);
  });

  test("gc releases exactly them, says so, and counts them; a second run finds nothing", async () => {
    const gc = await ippool("gc");
    expect(gc.code).toBe(0);
    expect(gc.stdout).toContain("3 leaked (no host has the VM):");
    expect(gc.stdout).toContain("released 3:");
    const remaining = await allocated();
    expect(remaining).toHaveLength(4);
    for (const vm of stray) expect(remaining).not.toContain(vm);
    expect(daemon.logs).toMatch(/released leaked allocation pool=vms vm_id=ghost-1/);

    const again = JSON.parse((await ippool("gc", "--json")).stdout);
    expect(again).toMatchObject({ leaks: [], released: [] });

    const text = await (await daemon.fetch("/metrics", { via: "unix" })).text();
    const samples = parseExposition(text);
    expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(3);
    expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(0);
    expect(sampleValue(samples, "ippool_pool_releases_total", { pool: "vms", kind: "vm" })).toBe(3);
    const { code, output } = await promtool(["check", "metrics"], text);
    expect(output).toBe("");
    expect(code).toBe(0);
  });

  test("with a host down nothing is reported or released, and the answer names the host; once it is back, gc works", async () => {
    await allocate("ghost-3", "hv1");
    await Bun.sleep(GRACE_S * 1000 + 100);
    expect((await call("GET", "/api/v1/leaks")).body.leaks.map((l: { vm_id: string }) => l.vm_id)).toEqual(["ghost-3"]);
    await bed.hostDown("hv2");
    try {
      const refused = await call("GET", "/api/v1/leaks");
      expect(refused.status).toBe(503);
      expect(refused.body.code).toBe("LEAK_CHECK_INCOMPLETE");
      expect(refused.body.error).toContain("host hv2");
      expect(refused.body.error).not.toContain("hv1");
      expect((await call("POST", "/api/v1/leaks/release")).status).toBe(503);
      for (const args of [["gc"], ["gc", "--dry-run"]]) {
        const gc = await ippool(...args);
        expect(gc.code).toBe(1);
        expect(gc.stdout).toBe("");
        expect(gc.stderr).toStartWith("ippool: LEAK_CHECK_INCOMPLETE: leak check incomplete");
        expect(gc.stderr).toContain("host hv2");
      }
      expect(await allocated()).toContain("ghost-3");
      // The gauge keeps what the last complete check found.
      const samples = parseExposition(await (await daemon.fetch("/metrics", { via: "unix" })).text());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(1);
    } finally {
      await bed.hostUp("hv2");
    }
    // The daemon reconnects by itself (with backoff); then the check is complete again.
    expect(await eventually(async () => (await call("GET", "/api/v1/leaks")).status === 200, 30_000)).toBe(true);
    const gc = JSON.parse((await ippool("gc", "--json")).stdout);
    expect(gc.released.map((a: { vm_id: string }) => a.vm_id)).toEqual(["ghost-3"]);
    expect(await allocated()).toHaveLength(4);
  }, 60_000);
});
