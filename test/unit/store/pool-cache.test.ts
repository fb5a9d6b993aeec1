import { expect, test } from "bun:test";
import { formatIpv4 } from "../../../src/net/ipv4.ts";
import { checkPool } from "../../../src/pool/fsck.ts";
import { PoolService } from "../../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../../src/pool/startup.ts";
import { LmdbStore } from "../../../src/store/lmdb.ts";
import { poolLayout, storePerTest } from "../../support/store-fixture.ts";

let store: LmdbStore;
const stores = storePerTest((opened) => {
  store = opened;
});
// Lowest-first: a stale page would offer the lowest addresses another writer took.
const layout = poolLayout("lab", "10.9.0.0/20", { strategy: "lowest" });

async function allocateMany(service: PoolService, prefix: string, count: number): Promise<string[]> {
  const answers = await Promise.all(
    Array.from({ length: count }, (_, i) => service.allocate({ vmId: `${prefix}-${i}` })),
  );
  return answers.map(({ allocation }) => formatIpv4(allocation.ip));
}

test("pages served from memory are what the store holds on disk after a reopen", async () => {
  await adoptPoolLayouts(store, [layout]);
  const service = new PoolService(store, [layout], "lab");
  await allocateMany(service, "a", 300);
  await service.release("a-7");
  await service.release("a-200");
  await allocateMany(service, "b", 50);
  const inMemory = [...store.pageIndexes("lab")].map((index) => [...(store.getPage("lab", index) ?? [])]);
  await stores.reopen();
  const onDisk = [...store.pageIndexes("lab")].map((index) => [...(store.getPage("lab", index) ?? [])]);
  expect(onDisk).toEqual(inMemory);
  expect(checkPool(store, layout).problems).toEqual([]);
});

test("a page changed behind the cache (a commit it did not see) is read again, never handed out twice", async () => {
  await adoptPoolLayouts(store, [layout]);
  const service = new PoolService(store, [layout], "lab");
  const first = await allocateMany(service, "a", 5);
  // A second store over the same directory writes the next addresses: the first one's cached page
  // does not have them. Its next transaction must see that the pool's generation moved on.
  const other = new LmdbStore(stores.dir);
  const otherService = new PoolService(other, [layout], "lab");
  const behind = await allocateMany(otherService, "b", 5);
  const after = await allocateMany(service, "c", 5);
  await other.close();
  const all = [...first, ...behind, ...after];
  expect(new Set(all).size).toBe(all.length);
  expect(checkPool(store, layout).problems).toEqual([]);
});
