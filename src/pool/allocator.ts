/**
 * Allocation and release as synchronous steps inside one store transaction. Each step reads
 * and validates everything first and writes only when it cannot fail, so an error never
 * leaves a half-applied change behind in a shared (group-committed) transaction.
 */
import { type Nic, sameNic } from "../dhcp/link.ts";
import { InvalidIpError } from "../net/errors.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import { fail, type Outcome } from "../outcome.ts";
import type { Writable } from "../writable.ts";
import { clearBit, emptyPage, findClear, findSetCircular, PAGE_BITS, setBit, testBit } from "./bitmap.ts";
import { AddressInUseError, ORIGINAL_MESSAGES, PoolExhaustedError, VmHasOtherAddressError } from "./errors.ts";
import type { PoolLayout } from "./layout.ts";
import type { AllocationRecord, PoolCounters, PoolStore } from "./store.ts";

export interface Allocation {
  readonly pool: string;
  readonly vmId: string;
  readonly ip: number;
  readonly hostname?: string;
  /** The VM's name: an alias that finds it as its vm_id does. */
  readonly name?: string;
  /** The hypervisor host the VM runs on, as its launch hook reported it. */
  readonly host?: string;
  /** The NIC that receives this address by DHCP. */
  readonly nic?: Nic;
  readonly createdAt: number;
}

export interface AllocateRequest {
  readonly vmId: string;
  readonly hostname?: string;
  readonly name?: string;
  readonly host?: string;
  /** The NIC to reserve the address for (one on a link this pool serves). */
  readonly nic?: Nic;
  /** A specific address the caller wants, as a uint32. */
  readonly ip?: number;
  /**
   * An address to take if the pool has it free (a running guest's current lease, adopted so it
   * keeps it); otherwise one is chosen as usual. Ignored when `ip` is given.
   */
  readonly preferredIp?: number;
}

export interface Allocated {
  readonly allocation: Allocation;
  /** False when the vm_id already held an address and the call was a repeat. */
  readonly created: boolean;
  /** A repeat that changed the allocation: what it was (its NIC's reservation may need withdrawing). */
  readonly previous?: Allocation;
}

function countersOf(store: PoolStore, layout: PoolLayout): PoolCounters {
  const counters = store.getCounters(layout.name);
  if (!counters) throw new Error(`pool ${layout.name} has no stored counters (startup did not initialise it)`);
  return counters;
}

function summaryOf(store: PoolStore, layout: PoolLayout): Uint32Array {
  const summary = store.getSummary(layout.name);
  if (!summary) throw new Error(`pool ${layout.name} has no stored summary`);
  return summary;
}

export function allocateInTransaction(
  store: PoolStore,
  layout: PoolLayout,
  request: AllocateRequest,
): Outcome<Allocated> {
  const existing = store.getAllocation(layout.name, request.vmId);
  if (existing) {
    if (request.ip !== undefined && request.ip !== existing.ip) {
      return fail(
        new VmHasOtherAddressError(
          `vm ${request.vmId} already holds ${formatIpv4(existing.ip)} in pool ${layout.name}, not ${formatIpv4(request.ip)}`,
        ),
      );
    }
    const record = updatedOnRepeat(store, layout, request, existing);
    const allocation = { pool: layout.name, vmId: request.vmId, ...record };
    const previous = record === existing ? {} : { previous: { pool: layout.name, vmId: request.vmId, ...existing } };
    return { ok: true, value: { allocation, created: false, ...previous } };
  }
  const counters = countersOf(store, layout);
  const preferred = request.preferredIp === undefined ? undefined : checkRequested(store, layout, request.preferredIp);
  const chosen =
    request.ip !== undefined
      ? checkRequested(store, layout, request.ip)
      : preferred?.ok
        ? preferred
        : findFreeOrdinal(store, layout, counters);
  if (!chosen.ok) return chosen;
  const ordinal = chosen.value;
  const record = newRecord(layout.ipAt(ordinal), request);
  markTaken(store, layout, ordinal);
  store.putAllocation(layout.name, request.vmId, record);
  store.putAddress(layout.name, record.ip, request.vmId);
  // The newest VM to take a name owns it: a domain undefined and defined again under its old name
  // is found by that name, while the old one's allocation waits for leak collection.
  if (request.name !== undefined) store.putName(layout.name, request.name, request.vmId);
  const chosenFreely = request.ip === undefined && !preferred?.ok;
  const cursor = layout.strategy === "next-fit" && chosenFreely ? (ordinal + 1) % layout.cidr.size : counters.cursor;
  store.putCounters(layout.name, { cursor, allocated: counters.allocated + 1 });
  return { ok: true, value: { allocation: { pool: layout.name, vmId: request.vmId, ...record }, created: true } };
}

/** The stored record of a new allocation; optional fields only where the request has them. */
function newRecord(ip: number, request: AllocateRequest): AllocationRecord {
  const record: Writable<AllocationRecord> = { ip, createdAt: Date.now() };
  if (request.hostname !== undefined) record.hostname = request.hostname;
  if (request.name !== undefined) record.name = request.name;
  if (request.host !== undefined) record.host = request.host;
  if (request.nic !== undefined) record.nic = request.nic;
  return record;
}

/**
 * Releases the vm's address in this pool; returns what was released, or null if it held none.
 * `record` is its allocation record when the caller has just read it in this transaction.
 */
export function releaseInTransaction(
  store: PoolStore,
  layout: PoolLayout,
  vmId: string,
  record: AllocationRecord | undefined = store.getAllocation(layout.name, vmId),
): Allocation | null {
  if (!record) return null;
  const counters = countersOf(store, layout);
  markFree(store, layout, layout.ordinalOf(record.ip));
  store.removeAllocation(layout.name, vmId);
  store.removeAddress(layout.name, record.ip);
  dropName(store, layout, record.name, vmId);
  store.putCounters(layout.name, { cursor: counters.cursor, allocated: counters.allocated - 1 });
  return { pool: layout.name, vmId, ...record };
}

/**
 * A repeat allocation keeps the address and creation time. From another host it is the VM having
 * moved there (live migration: the destination's hook runs first), so the host is updated; a new
 * name (a renamed domain) moves the alias.
 */
function updatedOnRepeat(
  store: PoolStore,
  layout: PoolLayout,
  request: AllocateRequest,
  existing: AllocationRecord,
): AllocationRecord {
  const host = request.host ?? existing.host;
  const name = request.name ?? existing.name;
  const nic = request.nic ?? existing.nic;
  if (host === existing.host && name === existing.name && sameNic(nic, existing.nic)) return existing;
  const record = {
    ...existing,
    ...(host === undefined ? {} : { host }),
    ...(name === undefined ? {} : { name }),
    ...(nic === undefined ? {} : { nic }),
  };
  store.putAllocation(layout.name, request.vmId, record);
  if (name !== existing.name && name !== undefined) {
    dropName(store, layout, existing.name, request.vmId);
    store.putName(layout.name, name, request.vmId);
  }
  return record;
}

/** Takes `name` off the name index if it still stands for this VM (a newer VM may have taken it). */
function dropName(store: PoolStore, layout: PoolLayout, name: string | undefined, vmId: string): void {
  if (name !== undefined && store.vmNamed(layout.name, name) === vmId) store.removeName(layout.name, name);
}

function checkRequested(store: PoolStore, layout: PoolLayout, ip: number): Outcome<number> {
  if (!layout.contains(ip)) {
    return fail(new InvalidIpError(`${formatIpv4(ip)} is not in pool ${layout.name} (${layout.network})`));
  }
  const ordinal = layout.ordinalOf(ip);
  if (layout.isUnusable(ordinal)) {
    return fail(new InvalidIpError(`${formatIpv4(ip)} is reserved in pool ${layout.name} and is never handed out`));
  }
  const page = store.getPage(layout.name, Math.floor(ordinal / PAGE_BITS));
  if (page && testBit(page, ordinal % PAGE_BITS)) {
    const holder = store.vmAt(layout.name, ip);
    return fail(new AddressInUseError(`${formatIpv4(ip)} is allocated to ${holder ?? "another vm"}`));
  }
  return { ok: true, value: ordinal };
}

/**
 * Next free ordinal at or after the cursor (next-fit) or from 0 (lowest), on the pages the store
 * says to allocate from. Reads at most the cursor's page, that set of pages and one more page,
 * whatever the pool's size or fill.
 */
function findFreeOrdinal(store: PoolStore, layout: PoolLayout, counters: PoolCounters): Outcome<number> {
  const pages = store.pagesToAllocateFrom(layout.name);
  if (!pages) throw new Error(`pool ${layout.name} has no stored summary`);
  const start = layout.strategy === "next-fit" ? counters.cursor % layout.cidr.size : 0;
  const startPage = Math.floor(start / PAGE_BITS);
  if (testBit(pages, startPage)) {
    const page = store.getPage(layout.name, startPage) ?? emptyPage();
    const bit = findClear(page, layout.reservedMask(startPage), start % PAGE_BITS, layout.bitsInPage(startPage));
    if (bit >= 0) return { ok: true, value: startPage * PAGE_BITS + bit };
  }
  const next = findSetCircular(pages, startPage + 1, layout.pageCount);
  if (next < 0) return fail(new PoolExhaustedError(ORIGINAL_MESSAGES.exhausted));
  const nextPage = store.getPage(layout.name, next) ?? emptyPage();
  const nextBit = findClear(nextPage, layout.reservedMask(next), 0, layout.bitsInPage(next));
  if (nextBit < 0) throw new Error(`pool ${layout.name}: summary marks page ${next} free but it is full`);
  return { ok: true, value: next * PAGE_BITS + nextBit };
}

function markTaken(store: PoolStore, layout: PoolLayout, ordinal: number): void {
  const index = Math.floor(ordinal / PAGE_BITS);
  const page = store.getPage(layout.name, index) ?? emptyPage();
  setBit(page, ordinal % PAGE_BITS);
  store.putPage(layout.name, index, page);
  if (!layout.pageHasFree(index, page)) {
    const summary = summaryOf(store, layout);
    clearBit(summary, index);
    store.putSummary(layout.name, summary);
  }
}

function markFree(store: PoolStore, layout: PoolLayout, ordinal: number): void {
  const index = Math.floor(ordinal / PAGE_BITS);
  const page = store.getPage(layout.name, index) ?? emptyPage();
  clearBit(page, ordinal % PAGE_BITS);
  store.putPage(layout.name, index, page);
  const summary = summaryOf(store, layout);
  if (!testBit(summary, index)) {
    setBit(summary, index);
    store.putSummary(layout.name, summary);
  }
}
