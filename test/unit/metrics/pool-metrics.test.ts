/**
 * Pool metrics: the gauges read the source at each scrape; the counters count what the services
 * report after the commit. The second half runs the real services over a real store.
 */
import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import type { ProjectDefinition } from "../../../src/config/config.ts";
import { EipService } from "../../../src/eip/service.ts";
import { poolMetrics } from "../../../src/metrics/pool-metrics.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";
import { PoolService, type PoolUsage } from "../../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../../src/pool/startup.ts";
import { parseExposition, sampleValue } from "../../support/prometheus.ts";
import { backendPerTest, STORE_BACKENDS } from "../../support/store-backends.ts";
import { poolLayout, publicPoolLayout } from "../../support/store-fixture.ts";

async function scrape(registry: Registry) {
  return parseExposition(await registry.metrics());
}

describe("poolMetrics", () => {
  test("reports each pool's addresses by state and its size from the source, at every scrape", async () => {
    const registry = new Registry();
    let usage: PoolUsage[] = [
      { pool: "vms", kind: "vm", usable: 253, allocated: 3, available: 250, reserved: 3 },
      { pool: "public", kind: "eip", usable: 256, allocated: 0, available: 256, reserved: 0 },
    ];
    poolMetrics(registry, { pools: [], usage: async () => usage });
    let samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_pool_addresses", { pool: "vms", kind: "vm", state: "allocated" })).toBe(3);
    expect(sampleValue(samples, "ippool_pool_addresses", { pool: "vms", kind: "vm", state: "available" })).toBe(250);
    expect(sampleValue(samples, "ippool_pool_addresses", { pool: "vms", kind: "vm", state: "reserved" })).toBe(3);
    expect(sampleValue(samples, "ippool_pool_size_addresses", { pool: "public", kind: "eip" })).toBe(256);
    usage = [{ pool: "vms", kind: "vm", usable: 253, allocated: 10, available: 243, reserved: 3 }];
    samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_pool_addresses", { pool: "vms", state: "allocated" })).toBe(10);
    // A pool the source no longer reports is gone, not frozen at its last value.
    expect(samples.filter((s) => s.labels.pool === "public" && s.name === "ippool_pool_size_addresses")).toEqual([]);
  });

  test("starts every configured pool's counters at zero, failure reasons included", async () => {
    const registry = new Registry();
    poolMetrics(registry, {
      pools: [
        { pool: "vms", kind: "vm" },
        { pool: "public", kind: "eip" },
      ],
      usage: async () => [],
    });
    const samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_pool_allocations_total", { pool: "vms", kind: "vm" })).toBe(0);
    expect(sampleValue(samples, "ippool_pool_releases_total", { pool: "public", kind: "eip" })).toBe(0);
    const vmReasons = samples
      .filter((s) => s.name === "ippool_pool_allocation_failures_total" && s.labels.pool === "vms")
      .map((s) => s.labels.reason);
    expect(vmReasons).toEqual(["exhausted", "address_in_use", "invalid_ip", "vm_has_other_address"]);
    expect(
      sampleValue(samples, "ippool_pool_allocation_failures_total", { pool: "public", reason: "quota_exceeded" }),
    ).toBe(0);
  });

  test("counts the events it is told", async () => {
    const registry = new Registry();
    const events = poolMetrics(registry, { pools: [], usage: async () => [] });
    events.allocated("vms", "vm");
    events.allocated("vms", "vm");
    events.released("vms", "vm");
    events.allocationFailed("vms", "vm", "exhausted");
    const samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_pool_allocations_total", { pool: "vms" })).toBe(2);
    expect(sampleValue(samples, "ippool_pool_releases_total", { pool: "vms" })).toBe(1);
    expect(sampleValue(samples, "ippool_pool_allocation_failures_total", { reason: "exhausted" })).toBe(1);
  });
});

for (const backend of STORE_BACKENDS) {
  describe(`the pool services report to it (${backend} store)`, () => {
    let registry: Registry;
    let pools: PoolService;
    let eips: EipService;
    const acme: ProjectDefinition = { name: "acme", apiKeySha256: "0".repeat(64), quota: 2 };

    backendPerTest(backend, async (store) => {
      registry = new Registry();
      // A /29: network, broadcast, gateway and one reservation leave 4 usable addresses.
      const vm = poolLayout("vms", "10.0.0.0/29", { reserved: ["10.0.0.6"] });
      const publicPool = publicPoolLayout("public", "100.64.0.0/30");
      await adoptPoolLayouts(store, [vm, publicPool]);
      const events = poolMetrics(registry, {
        pools: [
          { pool: "vms", kind: "vm" },
          { pool: "public", kind: "eip" },
        ],
        usage: async () => [...(await pools.usage()), ...(await eips.usage())],
      });
      pools = new PoolService(store, [vm], "vms", events);
      eips = new EipService(store, new Map([["public", publicPool]]), "public", events);
    });

    test("allocations, repeats, refusals and releases of VM addresses", async () => {
      await pools.allocate({ vmId: "a" });
      await pools.allocate({ vmId: "a" }); // a repeat: not a new allocation
      await pools.allocate({ vmId: "b", ip: parseIpv4("10.0.0.4") });
      await expect(pools.allocate({ vmId: "c", ip: parseIpv4("10.0.0.4") })).rejects.toThrow();
      await expect(pools.allocate({ vmId: "c", ip: parseIpv4("10.0.0.6") })).rejects.toThrow();
      await expect(pools.allocate({ vmId: "b", ip: parseIpv4("10.0.0.5") })).rejects.toThrow();
      await pools.allocate({ vmId: "c" });
      await pools.allocate({ vmId: "d" });
      await expect(pools.allocate({ vmId: "e" })).rejects.toThrow("No available IPs");
      await pools.release("a");
      await pools.releaseByIp("10.0.0.4");
      await expect(pools.release("nobody")).rejects.toThrow();

      const samples = await scrape(registry);
      const vm = { pool: "vms", kind: "vm" };
      expect(sampleValue(samples, "ippool_pool_allocations_total", vm)).toBe(4);
      expect(sampleValue(samples, "ippool_pool_releases_total", vm)).toBe(2);
      const failures = (reason: string) =>
        sampleValue(samples, "ippool_pool_allocation_failures_total", { ...vm, reason });
      expect(failures("address_in_use")).toBe(1);
      expect(failures("invalid_ip")).toBe(1);
      expect(failures("vm_has_other_address")).toBe(1);
      expect(failures("exhausted")).toBe(1);
      // The gauges are the service's own stats.
      const stats = await pools.stats("vms");
      expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "allocated" })).toBe(stats.allocated);
      expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "available" })).toBe(stats.available);
      expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "reserved" })).toBe(4);
      expect(sampleValue(samples, "ippool_pool_size_addresses", vm)).toBe(stats.total);
      expect(stats.total).toBe(4);
    });

    test("elastic IPs count under their configured pool name, kind eip", async () => {
      const first = await eips.allocate(acme, { idempotencyKey: "k" });
      await eips.allocate(acme, { idempotencyKey: "k" }); // a replay
      await eips.allocate(acme, {});
      await expect(eips.allocate(acme, {})).rejects.toThrow(); // quota 2
      await eips.release(acme, first.eip.id);

      const samples = await scrape(registry);
      const eip = { pool: "public", kind: "eip" };
      expect(sampleValue(samples, "ippool_pool_allocations_total", eip)).toBe(2);
      expect(sampleValue(samples, "ippool_pool_releases_total", eip)).toBe(1);
      expect(sampleValue(samples, "ippool_pool_allocation_failures_total", { ...eip, reason: "quota_exceeded" })).toBe(
        1,
      );
      expect(sampleValue(samples, "ippool_pool_addresses", { ...eip, state: "allocated" })).toBe(1);
      expect(sampleValue(samples, "ippool_pool_size_addresses", eip)).toBe(2); // a /30 without network and broadcast
    });
  });
}
