/**
 * Brings the stored pools in line with the configured ones at start, without scanning
 * allocations: a pool whose layout fingerprint is unchanged is left as it is. A pool grows in place
 * (a shorter prefix on the same network address: its pages, indexed from that address, stay as
 * they are) and shrinks in place when the part it loses is empty. Anything that would silently
 * corrupt state (another network under live allocations, a shrink over allocated addresses, a new
 * reservation over an allocated address, a removed pool that still has allocations) refuses to
 * start instead.
 */
import { formatCidr, formatIpv4, parseCidr } from "../net/ipv4.ts";
import type { StepStore } from "../store/steps.ts";
import { emptyPage, setBit, zeroedWords } from "./bitmap.ts";
import { PoolStateConflictError } from "./errors.ts";
import type { PoolLayout } from "./layout.ts";
import type { PoolStore } from "./store.ts";

/** Adopts the configured layouts in one transaction, or throws `PoolStateConflictError` and changes nothing. */
export function adoptPoolLayouts(store: StepStore, layouts: readonly PoolLayout[]): Promise<void> {
  return store.write((view) => {
    const configured = new Set(layouts.map((l) => l.name));
    for (const name of view.poolNames()) {
      if (!configured.has(name)) dropUnconfiguredPool(view, name);
    }
    for (const layout of layouts) adoptPoolLayout(view, layout);
  });
}

function dropUnconfiguredPool(store: PoolStore, name: string): void {
  const allocated = store.getCounters(name)?.allocated ?? 0;
  if (allocated > 0) {
    throw new PoolStateConflictError(
      `pool "${name}" (${store.getStamp(name)?.cidr}) has ${allocated} allocations in the data directory but is not in the config; restore it to the config or release its allocations first`,
    );
  }
  store.removePool(name);
}

function adoptPoolLayout(store: PoolStore, layout: PoolLayout): void {
  const stamp = store.getStamp(layout.name);
  if (stamp?.fingerprint === layout.fingerprint) return;
  if (!stamp) {
    initialisePool(store, layout);
    return;
  }
  if (stamp.cidr !== layout.network && !resizedInPlace(store, layout, stamp.cidr)) {
    const allocated = store.getCounters(layout.name)?.allocated ?? 0;
    if (allocated > 0) {
      throw new PoolStateConflictError(
        `pools.${layout.name}.cidr changed from ${stamp.cidr} to ${layout.network} while the pool has ${allocated} allocations; restore the old cidr or release them first`,
      );
    }
    store.removePool(layout.name);
    initialisePool(store, layout);
    return;
  }
  for (const range of layout.unusable) {
    for (const held of store.addresses(layout.name, layout.ipAt(range.first), layout.ipAt(range.last), 1)) {
      throw new PoolStateConflictError(
        `pools.${layout.name}: ${formatIpv4(held.ip)} is now reserved (${layout.describeOrdinalRange(range)}) but is allocated to ${held.vmId}; release it first`,
      );
    }
  }
  store.putSummary(
    layout.name,
    buildSummary(layout, (index) => store.getPage(layout.name, index)),
  );
  store.putStamp(layout.name, { cidr: layout.network, fingerprint: layout.fingerprint });
}

/**
 * Resizes a pool whose network address stays the same, or returns false (another network). A
 * shrink drops the pages past the new end, which hold nothing once the check has passed, and puts
 * a next-fit cursor past the end back to the start.
 */
function resizedInPlace(store: PoolStore, layout: PoolLayout, storedCidr: string): boolean {
  const old = parseCidr(storedCidr);
  if (old.base !== layout.cidr.base) return false;
  if (layout.cidr.size >= old.size) return true;
  const firstGone = layout.cidr.base + layout.cidr.size;
  for (const held of store.addresses(layout.name, firstGone, old.base + old.size - 1, 1)) {
    throw new PoolStateConflictError(
      `pools.${layout.name}.cidr shrinks from ${formatCidr(old)} to ${layout.network}, but ${formatIpv4(held.ip)}, past the new end, is allocated to ${held.vmId}; release it first or keep the cidr`,
    );
  }
  for (const index of [...store.pageIndexes(layout.name)]) {
    if (index >= layout.pageCount) store.removePage(layout.name, index);
  }
  const counters = store.getCounters(layout.name);
  if (counters && counters.cursor >= layout.cidr.size) store.putCounters(layout.name, { ...counters, cursor: 0 });
  return true;
}

function initialisePool(store: PoolStore, layout: PoolLayout): void {
  store.putSummary(
    layout.name,
    buildSummary(layout, () => undefined),
  );
  store.putStamp(layout.name, { fingerprint: layout.fingerprint, cidr: layout.network });
  store.putCounters(layout.name, { cursor: 0, allocated: 0 });
}

/** One bit per page: set when the page has at least one address that is neither taken nor reserved. */
function buildSummary(layout: PoolLayout, pageAt: (index: number) => Uint32Array | undefined): Uint32Array {
  const summary = zeroedWords(Math.max(1, Math.ceil(layout.pageCount / 32)));
  for (let index = 0; index < layout.pageCount; index++) {
    if (layout.pageHasFree(index, pageAt(index) ?? emptyPage())) setBit(summary, index);
  }
  return summary;
}
