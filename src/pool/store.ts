import type { Nic } from "../dhcp/link.ts";

/**
 * The narrow storage interface the pool logic needs: the view a step sees (store/steps.ts). Every
 * method is synchronous; writes are valid only in a write step.
 */

/** What layout a pool's bitmap was built for; written at start, read at start. */
export interface PoolStamp {
  /** Fingerprint of the layout (CIDR and unusable ranges). */
  readonly fingerprint: string;
  readonly cidr: string;
}

/** Per-pool counters, written with every allocation and release (kept small and binary). */
export interface PoolCounters {
  /** Next-fit position: the ordinal after the last one handed out. */
  readonly cursor: number;
  /** Addresses currently allocated (so stats never scan). */
  readonly allocated: number;
}

export interface AllocationRecord {
  readonly ip: number;
  readonly hostname?: string;
  /** The VM's name (a libvirt domain's name): an alias that finds the same VM as its vm_id (its UUID). */
  readonly name?: string;
  readonly host?: string;
  /** The NIC whose DHCP reservation hands the VM this address (on a link the pool serves). */
  readonly nic?: Nic;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
}

export interface PoolStore {
  poolNames(): string[];
  getStamp(pool: string): PoolStamp | undefined;
  putStamp(pool: string, stamp: PoolStamp): void;
  getCounters(pool: string): PoolCounters | undefined;
  putCounters(pool: string, counters: PoolCounters): void;
  removePool(pool: string): void;

  getSummary(pool: string): Uint32Array | undefined;
  putSummary(pool: string, words: Uint32Array): void;
  /**
   * The pages a new address is to be taken from, as a summary (a set bit per page): the summary
   * itself where this daemon is the pool's only writer; in fleet mode the pages this daemon holds,
   * so that daemons do not wait for one another on one page (docs/FLEET.md). Never a page the
   * summary marks full.
   */
  pagesToAllocateFrom(pool: string): Uint32Array | undefined;
  getPage(pool: string, index: number): Uint32Array | undefined;
  putPage(pool: string, index: number, words: Uint32Array): void;
  removePage(pool: string, index: number): void;
  pageIndexes(pool: string): Iterable<number>;

  getAllocation(pool: string, vmId: string): AllocationRecord | undefined;
  putAllocation(pool: string, vmId: string, record: AllocationRecord): void;
  removeAllocation(pool: string, vmId: string): void;
  allocationEntries(pool: string): Iterable<{ vmId: string; record: AllocationRecord }>;

  /** The vm_id whose allocation in this pool carries `name` as its name. */
  vmNamed(pool: string, name: string): string | undefined;
  putName(pool: string, name: string, vmId: string): void;
  removeName(pool: string, name: string): void;
  /** Every name of a pool with the vm_id it stands for (fsck). */
  vmNames(pool: string): Iterable<{ name: string; vmId: string }>;

  vmAt(pool: string, ip: number): string | undefined;
  putAddress(pool: string, ip: number, vmId: string): void;
  removeAddress(pool: string, ip: number): void;
  /** Allocated addresses of a pool in ascending order, from `fromIp` (inclusive) to `toIp` (inclusive). */
  addresses(pool: string, fromIp: number, toIp: number, limit?: number): Iterable<{ ip: number; vmId: string }>;
}
