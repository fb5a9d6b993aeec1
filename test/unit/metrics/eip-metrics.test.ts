/**
 * EIPs by pool, project and state: the gauge asks the source for every configured combination;
 * the store answers from its state index, which follows every change of an EIP record and is
 * rebuilt at start when it does not match the records.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Registry } from "prom-client";
import type { EipRecord, EipState } from "../../../src/eip/store.ts";
import { eipMetrics } from "../../../src/metrics/eip-metrics.ts";
import type { LmdbStore } from "../../../src/store/lmdb.ts";
import { parseExposition, sampleValue } from "../../support/prometheus.ts";
import { storePerTest } from "../../support/store-fixture.ts";

describe("eipMetrics", () => {
  test("reports every configured pool, project and state, zeros included", async () => {
    const registry = new Registry();
    const counts: Record<string, number> = { "public/acme/associated": 2, "spare/globex/allocated": 1 };
    eipMetrics(registry, {
      pools: ["public", "spare"],
      projects: () => ["acme", "globex"],
      count: async (pool, project, state) => counts[`${pool}/${project}/${state}`] ?? 0,
    });
    const samples = parseExposition(await registry.metrics());
    expect(samples.filter((s) => s.name === "ippool_eips")).toHaveLength(8);
    expect(sampleValue(samples, "ippool_eips", { pool: "public", project: "acme", state: "associated" })).toBe(2);
    expect(sampleValue(samples, "ippool_eips", { pool: "public", project: "acme", state: "allocated" })).toBe(0);
    expect(sampleValue(samples, "ippool_eips", { pool: "spare", project: "globex", state: "allocated" })).toBe(1);
    counts["public/acme/associated"] = 0;
    const again = parseExposition(await registry.metrics());
    expect(sampleValue(again, "ippool_eips", { pool: "public", project: "acme", state: "associated" })).toBe(0);
  });
});

describe("the store's EIP state index", () => {
  let store: LmdbStore;
  const stores = storePerTest((opened) => {
    store = opened;
  });

  const eip = (id: string, project: string, state: EipState, pool = "public"): EipRecord => ({
    id,
    project,
    pool,
    publicIp: 0,
    state,
    createdAt: 0,
  });

  /** The same counts from reading every record, as the index should give them. */
  function scanned(pool: string, project: string, state: EipState): number {
    return [...store.allEips()].filter((e) => e.pool === pool && e.project === project && e.state === state).length;
  }

  test("follows allocation, association, disassociation and release", async () => {
    await store.write(() => {
      store.putEip(eip("eip-1", "acme", "allocated"));
      store.putEip(eip("eip-2", "acme", "allocated"));
      store.putEip(eip("eip-3", "globex", "allocated", "spare"));
    });
    expect(store.countEips("public", "acme", "allocated")).toBe(2);
    await store.write(() => store.putEip(eip("eip-1", "acme", "associated")));
    expect(store.countEips("public", "acme", "allocated")).toBe(1);
    expect(store.countEips("public", "acme", "associated")).toBe(1);
    await store.write(() => store.putEip(eip("eip-1", "acme", "associated"))); // unchanged state
    expect(store.countEips("public", "acme", "associated")).toBe(1);
    await store.write(() => store.putEip(eip("eip-1", "acme", "allocated")));
    await store.write(() => store.removeEip(eip("eip-2", "acme", "allocated")));
    for (const [pool, project] of [
      ["public", "acme"],
      ["public", "globex"],
      ["spare", "globex"],
    ] as const) {
      for (const state of ["allocated", "associated"] as const) {
        expect(store.countEips(pool, project, state)).toBe(scanned(pool, project, state));
      }
    }
    expect(store.countEips("public", "acme", "allocated")).toBe(1);
    expect(store.countEips("spare", "globex", "allocated")).toBe(1);
    expect(store.ensureEipStateIndex()).toBe(0);
  });

  test("is rebuilt from the records when it does not match them (a store from before the index)", async () => {
    await store.write(() => {
      store.putEip(eip("eip-1", "acme", "associated"));
      store.putEip(eip("eip-2", "acme", "allocated"));
    });
    // Take the index away, as a store written by an earlier version would have none.
    await stores.reopen(async (dir) => {
      const { open } = await import("lmdb");
      const raw = open({ path: join(dir, "ippool.mdb"), maxDbs: 16 });
      raw.openDB({ name: "eip-states" }).clearSync();
      await raw.close();
    });
    expect(store.countEips("public", "acme", "associated")).toBe(0);
    expect(store.ensureEipStateIndex()).toBe(2);
    expect(store.countEips("public", "acme", "associated")).toBe(1);
    expect(store.countEips("public", "acme", "allocated")).toBe(1);
    expect(store.ensureEipStateIndex()).toBe(0);
  });
});
