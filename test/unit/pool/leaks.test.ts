/**
 * Leak detection: the pure decision (which allocations are leaks, given every host's domains, the
 * grace period and hosts that did not answer), then the service over a real store with fake hosts.
 */
import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { leakMetrics } from "../../../src/metrics/leak-metrics.ts";
import { poolMetrics } from "../../../src/metrics/pool-metrics.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";
import type { Allocation } from "../../../src/pool/allocator.ts";
import { LeakCheckIncompleteError, PoolNotFoundError } from "../../../src/pool/errors.ts";
import type { LeakEvents } from "../../../src/pool/events.ts";
import {
  type Domain,
  type DomainDirectory,
  decideLeaks,
  type HostAnswer,
  LEAK_COLLECTION_JOB,
  LeakDetector,
  NO_HOSTS_REASON,
} from "../../../src/pool/leaks.ts";
import { PoolService } from "../../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../../src/pool/startup.ts";
import type { StepStore } from "../../../src/store/steps.ts";
import { parseExposition, sampleValue } from "../../support/prometheus.ts";
import { backendPerTest, STORE_BACKENDS } from "../../support/store-backends.ts";
import { poolLayout } from "../../support/store-fixture.ts";

const NOW = Date.parse("2026-11-22T12:00:00Z");
const MINUTE = 60_000;
const GRACE = 15 * MINUTE;
const UUID_A = "0b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa";
const UUID_B = "7d1e44c0-1f5b-4c4f-8a0e-2f8e6a3b9c01";

function allocation(vmId: string, ageMs: number, extra: Partial<Allocation> = {}): Allocation {
  return { pool: "vms", vmId, ip: parseIpv4("10.0.0.2"), createdAt: NOW - ageMs, ...extra };
}
const ok = (host: string, domains: Domain[]): HostAnswer => ({ host, ok: true, domains });
const down = (host: string, error = `host ${host}: not connected`): HostAnswer => ({ host, ok: false, error });
const leakedIds = (decision: ReturnType<typeof decideLeaks>) =>
  decision.kind === "complete" ? decision.leaks.map((leak) => leak.allocation.vmId) : decision.kind;

describe("decideLeaks", () => {
  const hosts = [ok("hv1", [{ name: "web-1", uuid: UUID_A }]), ok("hv2", [{ name: "db-1", uuid: UUID_B }])];

  test("an allocation whose vm_id is no domain's name or UUID on any host is a leak", () => {
    const decision = decideLeaks(
      [
        allocation("web-1", GRACE),
        allocation(UUID_B, GRACE),
        allocation("ghost", GRACE),
        allocation(UUID_B.replace("7", "8"), GRACE),
      ],
      hosts,
      GRACE,
      NOW,
    );
    expect(leakedIds(decision)).toEqual(["ghost", UUID_B.replace("7", "8")]);
  });

  test("names match exactly; UUIDs in any case, with or without dashes", () => {
    const decision = decideLeaks(
      [
        allocation(UUID_A.toUpperCase(), GRACE),
        allocation(UUID_B.replaceAll("-", ""), GRACE),
        allocation("WEB-1", GRACE),
        allocation("web-1 ", GRACE),
      ],
      hosts,
      GRACE,
      NOW,
    );
    expect(leakedIds(decision)).toEqual(["WEB-1", "web-1 "]);
  });

  test("every host is checked, whatever host the allocation records (a VM may have migrated)", () => {
    const moved = allocation("db-1", GRACE, { host: "hv1" });
    const gone = allocation("old-vm", GRACE, { host: "hv3" });
    expect(leakedIds(decideLeaks([moved, gone], hosts, GRACE, NOW))).toEqual(["old-vm"]);
  });

  test("the grace period protects young allocations; one exactly as old as the grace period is a leak", () => {
    const decision = decideLeaks(
      [
        allocation("young", GRACE - 1),
        allocation("just-old-enough", GRACE),
        allocation("old", 30 * 24 * 60 * MINUTE),
        allocation("from-the-future", -MINUTE),
      ],
      hosts,
      GRACE,
      NOW,
    );
    expect(leakedIds(decision)).toEqual(["just-old-enough", "old"]);
    if (decision.kind === "complete") expect(decision.leaks[0]?.ageMs).toBe(GRACE);
  });

  test("a grace period of 0 makes every unknown allocation a leak at once", () => {
    expect(leakedIds(decideLeaks([allocation("new", 0)], hosts, 0, NOW))).toEqual(["new"]);
  });

  test("a host that did not answer makes the check incomplete: nothing is a leak, and the hosts are named", () => {
    const decision = decideLeaks(
      [allocation("ghost", GRACE), allocation("web-1", GRACE)],
      [hosts[0] as HostAnswer, down("hv2"), down("hv3", "virsh failed")],
      GRACE,
      NOW,
    );
    expect(decision).toEqual({
      kind: "incomplete",
      unavailable: [
        { host: "hv2", error: "host hv2: not connected" },
        { host: "hv3", error: "virsh failed" },
      ],
    });
  });

  test("no hosts: nothing to compare against, never 'everything leaked'", () => {
    expect(decideLeaks([allocation("ghost", GRACE)], [], GRACE, NOW)).toEqual({ kind: "no-hosts" });
  });

  test("hosts with no domains at all: every old allocation is a leak (the check was complete)", () => {
    expect(leakedIds(decideLeaks([allocation("a", GRACE)], [ok("hv1", [])], GRACE, NOW))).toEqual(["a"]);
  });
});

for (const backend of STORE_BACKENDS) {
  describe(`LeakDetector over a real ${backend} store`, () => {
    let pools: PoolService;
    let registry: Registry;
    let leakEvents: LeakEvents;
    let domains: Map<string, Domain[] | Error>;
    const directory: DomainDirectory = {
      hostNames: () => [...domains.keys()],
      listDomains: async (host) => {
        const answer = domains.get(host);
        if (answer instanceof Error) throw answer;
        return answer ?? [];
      },
    };
    const layouts = [poolLayout("vms", "10.0.0.0/24"), poolLayout("lab", "10.1.0.0/24")];

    let current: StepStore;
    const stores = backendPerTest(backend, async (store) => {
      current = store;
      await adoptPoolLayouts(store, layouts);
      registry = new Registry();
      const events = poolMetrics(registry, {
        pools: layouts.map((l) => ({ pool: l.name, kind: "vm" as const })),
        usage: () => pools.usage(),
      });
      pools = new PoolService(store, layouts, "vms", events);
      leakEvents = leakMetrics(registry, ["vms", "lab"]);
      domains = new Map([
        ["hv1", [{ name: "web-1", uuid: UUID_A }]],
        ["hv2", [{ name: "db-1", uuid: UUID_B }]],
      ]);
    });

    /** A detector whose clock runs `aheadMs` ahead of the allocations' creation. */
    const detector = (aheadMs = GRACE, grace = GRACE / 1000) =>
      new LeakDetector(pools, directory, grace, {
        events: leakEvents,
        now: () => Date.now() + aheadMs,
      });

    async function seed(): Promise<void> {
      await pools.allocate({ vmId: "web-1", host: "hv1" });
      await pools.allocate({ vmId: UUID_B, host: "hv1" }); // recorded on hv1, now on hv2
      await pools.allocate({ vmId: "ghost", host: "hv1" });
      await pools.allocate({ vmId: "ghost", pool: "lab" });
    }

    test("check reports leaks across pools with their age, and releases nothing", async () => {
      await seed();
      const report = await detector().check();
      expect(report.leaks.map((l) => `${l.allocation.pool}/${l.allocation.vmId}`)).toEqual(["vms/ghost", "lab/ghost"]);
      expect(report.leaks.every((l) => l.ageMs >= GRACE)).toBe(true);
      expect(report.hosts).toEqual([
        { host: "hv1", domains: 1 },
        { host: "hv2", domains: 1 },
      ]);
      expect(report.released).toBeUndefined();
      expect((await pools.stats("vms")).allocated).toBe(3);
      const samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(0);
    });

    test("collect releases only leaks a hypervisor host reported (an undefined domain's), never an API-made allocation", async () => {
      await seed();
      const report = await detector().collect();
      expect(report.leaks.map((l) => `${l.allocation.pool}/${l.allocation.vmId}`)).toEqual(["vms/ghost", "lab/ghost"]);
      expect(report.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["vms/ghost"]);
      const samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "lab" })).toBe(1);
      expect(await pools.find("ghost", "lab")).toBeDefined();
      expect(await pools.find("web-1")).toBeDefined();
    });

    test("in fleet mode, collect leaves a leak recorded on a host this daemon does not list to that host's daemon", async () => {
      await seed();
      await pools.allocate({ vmId: "elsewhere", host: "hv9" }); // a host only another daemon lists
      const fleet = new LeakDetector(pools, directory, GRACE / 1000, {
        now: () => Date.now() + GRACE,
        collectOwnHostsOnly: true,
      });
      const report = await fleet.collect();
      expect(report.leaks.map((l) => l.allocation.vmId)).toEqual(["elsewhere", "ghost", "ghost"]);
      expect(report.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["vms/ghost"]);
      expect(await pools.find("elsewhere")).toBeDefined();
      const single = await detector().collect();
      expect(single.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["vms/elsewhere"]);
    });

    if (backend === "postgres") {
      test("in a fleet one daemon at a time collects, and one whose lease has passed on releases nothing", async () => {
        await seed();
        const other = stores.another("hv-b");
        const ahead = () => Date.now() + GRACE;
        const mine = new LeakDetector(pools, directory, GRACE / 1000, { now: ahead, jobs: current });
        const theirs = new LeakDetector(new PoolService(other, layouts, "vms"), directory, GRACE / 1000, {
          now: ahead,
          jobs: other,
        });
        const first = await mine.collectAlone(1);
        expect(first?.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["vms/ghost"]);
        expect(await theirs.collectAlone(60)).toBeUndefined(); // mine holds the lease
        await Bun.sleep(1100); // and lets it run out
        await pools.allocate({ vmId: "ghost-2", host: "hv1" });
        expect((await theirs.collectAlone(60))?.released?.map((a) => a.vmId)).toEqual(["ghost-2"]);
        await pools.allocate({ vmId: "ghost-3", host: "hv1" });
        // Mine, still acting on its first holding (epoch 1), finds the leak and releases nothing.
        const stale = await mine.collect({ job: LEAK_COLLECTION_JOB, epoch: 1 });
        expect(stale.leaks.map((l) => l.allocation.vmId)).toContain("ghost-3");
        expect(stale.released).toEqual([]);
        expect(await pools.find("ghost-3")).toBeDefined();
        expect(await mine.collectAlone(60)).toBeUndefined();
      });
    }

    test("release releases exactly the leaks, counts them, and a second run finds none", async () => {
      await seed();
      const report = await detector().release();
      expect(report.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["vms/ghost", "lab/ghost"]);
      expect(await pools.find("ghost")).toBeUndefined();
      expect(await pools.find("web-1")).toBeDefined();
      expect(await pools.find(UUID_B)).toBeDefined();
      let samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "lab" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_releases_total", { pool: "vms", kind: "vm" })).toBe(1);
      const again = await detector().release();
      expect(again.leaks).toEqual([]);
      expect(again.released).toEqual([]);
      samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(0);
      expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(1);
    });

    test("one pool only: the other pool's leaks are neither reported nor released, and its gauge is kept", async () => {
      await seed();
      await detector().check();
      const report = await detector().release("lab");
      expect(report.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["lab/ghost"]);
      expect(await pools.find("ghost", "vms")).toBeDefined();
      const samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "lab" })).toBe(1);
      await expect(detector().check("nosuch")).rejects.toBeInstanceOf(PoolNotFoundError);
    });

    test("the grace period protects young allocations", async () => {
      await seed();
      const report = await detector(0).release();
      expect(report.leaks).toEqual([]);
      expect(report.released).toEqual([]);
      expect(await pools.find("ghost")).toBeDefined();
    });

    test("a host that cannot be asked: refused with the host named, nothing released, the gauge kept", async () => {
      await seed();
      await detector().check();
      domains.set("hv2", new Error("host hv2: not connected: connect ECONNREFUSED 10.77.0.12:22"));
      const refused = detector().release();
      await expect(refused).rejects.toBeInstanceOf(LeakCheckIncompleteError);
      await expect(refused).rejects.toThrow(/hv2: not connected: connect ECONNREFUSED/);
      expect(await pools.find("ghost")).toBeDefined();
      expect(await pools.find("ghost", "lab")).toBeDefined();
      const samples = parseExposition(await registry.metrics());
      expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(0);
    });

    test("no hosts configured: no leaks, a reason, nothing released", async () => {
      await seed();
      domains.clear();
      const report = await detector().release();
      expect(report.reason).toBe(NO_HOSTS_REASON);
      expect(report.leaks).toEqual([]);
      expect(report.released).toEqual([]);
      expect((await pools.stats("vms")).allocated).toBe(3);
    });

    test("an allocation released and allocated again while hosts were asked is not released", async () => {
      await seed();
      const slow: DomainDirectory = {
        hostNames: directory.hostNames,
        listDomains: async (host) => {
          if (host === "hv1") {
            // Meanwhile: ghost's address is released, and ghost is allocated anew (a new VM by that name).
            await pools.release("ghost", "vms");
            await pools.allocate({ vmId: "ghost" });
          }
          return directory.listDomains(host);
        },
      };
      const report = await new LeakDetector(pools, slow, GRACE / 1000, { now: () => Date.now() + GRACE }).release();
      expect(report.leaks.map((l) => `${l.allocation.pool}/${l.allocation.vmId}`)).toEqual(["vms/ghost", "lab/ghost"]);
      expect(report.released?.map((a) => `${a.pool}/${a.vmId}`)).toEqual(["lab/ghost"]);
      expect(await pools.find("ghost", "vms")).toBeDefined();
    });
  });
}
