/** LMDB size gauges and refused commits: read from the store at each scrape. */
import { expect, test } from "bun:test";
import { Registry } from "prom-client";
import { storeMetrics } from "../../../src/metrics/store-metrics.ts";
import type { LmdbStore } from "../../../src/store/lmdb.ts";
import { parseExposition, sampleValue } from "../../support/prometheus.ts";
import { storePerTest } from "../../support/store-fixture.ts";

let store: LmdbStore;
storePerTest((opened) => {
  store = opened;
});

test("map size and used bytes come from the store, and used bytes grow as it fills", async () => {
  const registry = new Registry();
  storeMetrics(registry, store);
  const before = parseExposition(await registry.metrics());
  expect(sampleValue(before, "ippool_store_map_size_bytes")).toBe(2 ** 30);
  const usedBefore = sampleValue(before, "ippool_store_used_bytes");
  expect(usedBefore).toBeGreaterThan(0);
  expect(usedBefore % 4096).toBe(0);
  await store.write(() => {
    for (let i = 0; i < 2000; i++) store.putAllocation("vms", `vm-${i}`, { ip: i, createdAt: 0 });
  });
  const after = parseExposition(await registry.metrics());
  expect(sampleValue(after, "ippool_store_used_bytes")).toBeGreaterThan(usedBefore);
  expect(sampleValue(after, "ippool_store_used_bytes")).toBeLessThan(sampleValue(after, "ippool_store_map_size_bytes"));
});

test("a full file system shows as ippool_store_full 1 and counted storage_full failures, until a write succeeds", async () => {
  const registry = new Registry();
  let health = { full: true, failures: { storageFull: 3, other: 1 } };
  storeMetrics(registry, { sizes: () => store.sizes(), writeHealth: () => health });
  const full = parseExposition(await registry.metrics());
  expect(sampleValue(full, "ippool_store_full")).toBe(1);
  expect(sampleValue(full, "ippool_store_write_failures_total", { reason: "storage_full" })).toBe(3);
  expect(sampleValue(full, "ippool_store_write_failures_total", { reason: "error" })).toBe(1);
  health = { full: false, failures: health.failures };
  expect(sampleValue(parseExposition(await registry.metrics()), "ippool_store_full")).toBe(0);
});

test("the store starts healthy: nothing refused", () => {
  expect(store.writeHealth()).toEqual({ full: false, failures: { storageFull: 0, other: 0 } });
});
