/**
 * Fills a pool in-process, through the daemon's own modules, to a given percentage of its
 * usable addresses: `bun bench/fill.ts --config FILE [--pool NAME] [--percent 99] [--chunk 20000]`.
 * Allocations are batched, `--chunk` per write transaction; vm_ids are `fill-<n>`.
 */
import { parseArgs } from "node:util";
import { loadConfig } from "../src/config/load.ts";
import { allocateInTransaction } from "../src/pool/allocator.ts";
import { PoolLayout } from "../src/pool/layout.ts";
import { PoolService } from "../src/pool/service.ts";
import { adoptPoolLayouts } from "../src/pool/startup.ts";
import { LmdbStore } from "../src/store/lmdb.ts";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    pool: { type: "string" },
    percent: { type: "string", default: "99" },
    chunk: { type: "string", default: "20000" },
  },
  strict: true,
});
if (values.config === undefined) throw new Error("usage: bun bench/fill.ts --config FILE [--pool NAME] [--percent 99]");
const percent = Number(values.percent);
const chunk = Number(values.chunk);

const config = loadConfig({ configPath: values.config });
const store = new LmdbStore(config.dataDir);
const service = new PoolService(
  store,
  config.pools.map((definition) => new PoolLayout(definition)),
  config.defaultPool,
);
await adoptPoolLayouts(store, service.layouts);
const pool = values.pool ?? config.defaultPool;
const layout = service.layout(pool);
const target = Math.floor((layout.usableCount * percent) / 100);

const started = performance.now();
const initial = (await service.stats(pool)).allocated;
let done = initial;
let lastReport = started;
console.log(`fill: pool ${pool} (${layout.network}): ${done} -> ${target} of ${layout.usableCount} usable addresses`);
while (done < target) {
  const count = Math.min(chunk, target - done);
  const first = done;
  store.writeSync((view) => {
    for (let i = 0; i < count; i++) {
      const outcome = allocateInTransaction(view, layout, { vmId: `fill-${first + i}` });
      if (!outcome.ok) throw outcome.error;
    }
  });
  done += count;
  const now = performance.now();
  if (now - lastReport >= 10_000 || done === target) {
    lastReport = now;
    const seconds = (now - started) / 1000;
    console.log(
      `fill: ${done}/${target} (${((done / layout.usableCount) * 100).toFixed(1)}%) ${seconds.toFixed(0)} s, ${Math.round((done - initial) / seconds)} allocations/s`,
    );
  }
}
const stats = await service.stats(pool);
await store.close();
console.log(
  `fill: done in ${((performance.now() - started) / 1000).toFixed(1)} s: ${stats.allocated} allocated, ${stats.available} free (${stats.usage.toFixed(2)}%)`,
);
