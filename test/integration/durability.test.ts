/**
 * Never the same address twice and nothing acknowledged lost: hundreds of parallel allocations,
 * and kill -9 in the middle of a burst, checked through the API and with `ippool fsck`.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";

const POOL = poolsToml([{ name: "vms", cidr: "10.20.0.0/20", gateway: "10.20.0.1" }]);
let daemon: Daemon | undefined;

afterEach(async () => {
  await daemon?.dispose();
  daemon = undefined;
});

async function fsck(d: Daemon) {
  return runToExit(["fsck", "--config", d.configPath]);
}

describe("concurrency", () => {
  test("500 parallel allocations over TCP and the socket all get distinct addresses", async () => {
    daemon = await Daemon.start({ config: POOL });
    const d = daemon;
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        d.post("/api/v1/ip/allocate", { vm_id: `par-${i}` }, i % 2 ? "unix" : "tcp"),
      ),
    );
    expect(results.every((r) => r.status === 201)).toBe(true);
    expect(new Set(results.map((r) => r.body.ip)).size).toBe(500);
    expect((await d.json("/api/v1/ip/stats")).body.allocated).toBe(500);
  });

  test("parallel repeats of one vm_id create exactly one allocation", async () => {
    daemon = await Daemon.start({ config: POOL });
    const d = daemon;
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        d.fetch("/api/v1/ip/allocate", { method: "POST", body: JSON.stringify({ vm_id: "same" }) }),
      ),
    );
    expect(results.every((r) => r.status === 201)).toBe(true);
    expect(results.filter((r) => r.headers.get("x-ippool-created") === "true")).toHaveLength(1);
    const ips = await Promise.all(results.map(async (r) => ((await r.json()) as { ip: string }).ip));
    expect(new Set(ips).size).toBe(1);
  });

  test("parallel requests for one address grant it once and answer 409 to the rest", async () => {
    daemon = await Daemon.start({ config: POOL });
    const d = daemon;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => d.post("/api/v1/ip/allocate", { vm_id: `want-${i}`, ip: "10.20.3.3" })),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409)).toHaveLength(19);
  });

  test("mixed parallel allocations and releases leave bitmap and records in agreement", async () => {
    daemon = await Daemon.start({ config: POOL });
    const d = daemon;
    await Promise.all(Array.from({ length: 200 }, (_, i) => d.post("/api/v1/ip/allocate", { vm_id: `mix-${i}` })));
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        i % 2
          ? d.json(`/api/v1/ip/release/mix-${i}`, { method: "DELETE" })
          : d.post("/api/v1/ip/allocate", { vm_id: `mix-new-${i}` }),
      ),
    );
    expect(await d.stop()).toBe(0);
    const check = await fsck(d);
    expect(check.stdout).toContain("vms: 200 allocations, 0 problems");
    expect(check.code).toBe(0);
  });
});

describe("kill -9", () => {
  test("during a burst of parallel allocations loses nothing acknowledged and duplicates nothing", async () => {
    daemon = await Daemon.start({ config: POOL });
    const dir = daemon.dir;
    const d = daemon;
    const acknowledged = new Map<string, string>();
    const burst = Array.from({ length: 1500 }, (_, i) =>
      d
        .post("/api/v1/ip/allocate", { vm_id: `burst-${i}` }, i % 2 ? "unix" : "tcp")
        .then((r) => {
          if (r.status === 201) acknowledged.set(`burst-${i}`, r.body.ip);
        })
        .catch(() => undefined),
    );
    while (acknowledged.size < 200) await Bun.sleep(1);
    await d.kill9();
    await Promise.all(burst);
    expect(acknowledged.size).toBeGreaterThanOrEqual(200);
    expect(acknowledged.size).toBeLessThan(1500);

    daemon = await Daemon.start({ config: POOL, dir });
    const list = (await daemon.json("/api/v1/ip/allocations")).body as { vm_id: string; ip: string }[];
    const stored = new Map(list.map((a) => [a.vm_id, a.ip]));
    for (const [vm, ip] of acknowledged) expect(`${vm} ${stored.get(vm)}`).toBe(`${vm} ${ip}`);
    expect(new Set(list.map((a) => a.ip)).size).toBe(list.length);
    expect((await daemon.json("/api/v1/ip/stats")).body.allocated).toBe(list.length);
    expect(await daemon.stop()).toBe(0);
    const check = await fsck(daemon);
    expect(check.stdout).toContain(`vms: ${list.length} allocations, 0 problems`);
    expect(check.code).toBe(0);
  });
});
