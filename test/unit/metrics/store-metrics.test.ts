/** LMDB size gauges: read from the store at each scrape. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { storeMetrics } from "../../../src/metrics/store-metrics.ts";
import { LmdbStore } from "../../../src/store/lmdb.ts";
import { parseExposition, sampleValue } from "../../support/prometheus.ts";

let dir: string;
let store: LmdbStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ippool-store-metrics-test-"));
  store = new LmdbStore(dir);
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
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
