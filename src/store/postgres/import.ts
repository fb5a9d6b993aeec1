/**
 * Moving a host's LMDB store into a fleet's database (`ippool db import`): everything the store
 * holds (pools with their pages, summaries and counters, allocations and names, elastic IPs and
 * idempotency keys) written in one transaction into a database that holds nothing yet, then read
 * back and compared with the store. The database's constraints apply as to any write: a store
 * holding an address twice could not be imported.
 */
import { isDeepStrictEqual } from "node:util";
import type { EipRecord, IdempotencyRecord } from "../../eip/store.ts";
import type { AllocationRecord, PoolCounters, PoolStamp } from "../../pool/store.ts";
import type { LmdbStore } from "../lmdb.ts";
import type { StepStore, StoreView } from "../steps.ts";
import { ImportTargetNotEmptyError } from "./errors.ts";

interface PoolCopy {
  readonly name: string;
  readonly stamp: PoolStamp;
  readonly counters: PoolCounters;
  readonly summary: Uint32Array;
  readonly pages: readonly (readonly [number, Uint32Array])[];
  readonly allocations: readonly { readonly vmId: string; readonly record: AllocationRecord }[];
  readonly names: readonly { readonly name: string; readonly vmId: string }[];
}

interface StoreCopy {
  readonly pools: readonly PoolCopy[];
  readonly eips: readonly EipRecord[];
  readonly keys: readonly { readonly project: string; readonly key: string; readonly record: IdempotencyRecord }[];
}

export interface ImportReport {
  readonly pools: number;
  readonly allocations: number;
  readonly eips: number;
  /** Where the database, read back, differs from the store (none after a good import). */
  readonly differences: readonly string[];
}

export async function importStore(source: LmdbStore, target: StepStore): Promise<ImportReport> {
  const copy = copyOf(source);
  await target.write((view) => {
    const pools = view.poolNames();
    const eips = [...view.allEips()].length;
    if (pools.length > 0 || eips > 0) {
      throw new ImportTargetNotEmptyError(
        `the database already holds ${pools.length} pools and ${eips} elastic IPs: import into an empty (just migrated) database`,
      );
    }
    // Reads first: each allocation is looked up before anything is written, so the step asks
    // for a pool's rows once (store.ts) rather than running its writes again for each.
    for (const pool of copy.pools) for (const { vmId } of pool.allocations) view.getAllocation(pool.name, vmId);
    for (const pool of copy.pools) writePool(view, pool);
    for (const eip of copy.eips) view.putEip(eip);
    for (const { project, key, record } of copy.keys) view.putIdempotency(project, key, record);
  });
  const differences = await target.read((view) => compare(view, copy));
  return {
    pools: copy.pools.length,
    allocations: copy.pools.reduce((sum, pool) => sum + pool.allocations.length, 0),
    eips: copy.eips.length,
    differences,
  };
}

/** Everything the store holds, read out of it once. */
function copyOf(source: LmdbStore): StoreCopy {
  const pools = source.poolNames().map((name): PoolCopy => {
    const stamp = source.getStamp(name);
    const counters = source.getCounters(name);
    const summary = source.getSummary(name);
    if (!stamp || !counters || !summary) throw new Error(`pool ${name} is incomplete in the store: run ippool fsck`);
    return {
      name,
      stamp,
      counters,
      summary: summary.slice(),
      pages: [...source.pageIndexes(name)].map((index) => [
        index,
        (source.getPage(name, index) as Uint32Array).slice(),
      ]),
      allocations: [...source.allocationEntries(name)],
      names: [...source.vmNames(name)],
    };
  });
  return { pools, eips: [...source.allEips()], keys: [...source.idempotencyIndex()] };
}

/** A pool in the order the pool logic itself writes a new one (startup.ts): summary, stamp, the rest. */
function writePool(view: StoreView, pool: PoolCopy): void {
  view.putSummary(pool.name, pool.summary);
  view.putStamp(pool.name, pool.stamp);
  for (const [index, page] of pool.pages) view.putPage(pool.name, index, page);
  view.putCounters(pool.name, pool.counters);
  for (const { vmId, record } of pool.allocations) {
    view.putAllocation(pool.name, vmId, record);
    view.putAddress(pool.name, record.ip, vmId);
  }
  for (const { name, vmId } of pool.names) view.putName(pool.name, name, vmId);
}

function compare(view: StoreView, copy: StoreCopy): string[] {
  const differences: string[] = [];
  const differ = (what: string, stored: unknown, imported: unknown) => {
    if (!isDeepStrictEqual(stored, imported))
      differences.push(`${what}: the store has ${show(stored)}, the database ${show(imported)}`);
  };
  for (const pool of copy.pools) {
    differ(`pool ${pool.name}`, pool.stamp, view.getStamp(pool.name));
    differ(`pool ${pool.name} allocated`, pool.counters.allocated, view.getCounters(pool.name)?.allocated);
    differ(`pool ${pool.name} summary`, [...pool.summary], [...(view.getSummary(pool.name) ?? [])]);
    for (const [index, page] of pool.pages)
      differ(`pool ${pool.name} page ${index}`, [...page], [...(view.getPage(pool.name, index) ?? [])]);
    differ(`pool ${pool.name} allocations`, pool.allocations.length, [...view.allocationEntries(pool.name)].length);
    for (const { vmId, record } of pool.allocations)
      differ(`${pool.name}/${vmId}`, record, view.getAllocation(pool.name, vmId));
    for (const { name, vmId } of pool.names) differ(`${pool.name} name ${name}`, vmId, view.vmNamed(pool.name, name));
  }
  differ("elastic IPs", copy.eips.length, [...view.allEips()].length);
  for (const eip of copy.eips) differ(eip.id, eip, view.getEip(eip.id));
  for (const { project, key, record } of copy.keys)
    differ(`${project} key ${key}`, record, view.getIdempotency(project, key));
  return differences;
}

function show(value: unknown): string {
  return value === undefined ? "nothing" : JSON.stringify(value);
}
