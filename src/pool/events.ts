/**
 * What the pool services report as they complete or refuse a change, for metrics. Reported after
 * the store transaction: a counted allocation is a committed one. The services know nothing of
 * how these are recorded (`src/metrics/` implements them).
 */
import type { AppError } from "../errors.ts";

/** Private VM pools and public (elastic IP) pools. */
export type PoolKind = "vm" | "eip";

export interface PoolEvents {
  /** A new address was committed (a repeat of an existing allocation is not counted). */
  allocated(pool: string, kind: PoolKind): void;
  /** An address was released and the release committed. */
  released(pool: string, kind: PoolKind): void;
  /** An allocation in a configured pool was refused; `reason` is one of a few fixed words (see `failureReason`). */
  allocationFailed(pool: string, kind: PoolKind, reason: string): void;
}

export const NO_POOL_EVENTS: PoolEvents = {
  allocated() {},
  released() {},
  allocationFailed() {},
};

const REASONS: Readonly<Record<string, string>> = {
  POOL_EXHAUSTED: "exhausted",
  ADDRESS_IN_USE: "address_in_use",
  INVALID_IP: "invalid_ip",
  VM_HAS_OTHER_ADDRESS: "vm_has_other_address",
  QUOTA_EXCEEDED: "quota_exceeded",
  IDEMPOTENCY_MISMATCH: "idempotency_mismatch",
};

/** The refusals each kind of pool can answer with (metrics start them at zero). */
export const ALLOCATION_FAILURE_REASONS: Readonly<Record<PoolKind, readonly string[]>> = {
  vm: ["exhausted", "address_in_use", "invalid_ip", "vm_has_other_address"],
  eip: ["exhausted", "quota_exceeded", "idempotency_mismatch"],
};

/** The reason word for a refused allocation; anything unexpected (a store failure) is "internal". */
export function failureReason(error: unknown): string {
  const code = (error as Partial<AppError> | null)?.code;
  return (code !== undefined && REASONS[code]) || "internal";
}

/** What the leak check reports, for metrics (see `pool/leaks.ts`). */
export interface LeakEvents {
  /**
   * A complete check of these pools found these leaked allocations, by pool (a pool not in the
   * map has none). An incomplete check (a host could not be asked) reports nothing.
   */
  checked(pools: readonly string[], leaksByPool: ReadonlyMap<string, number>): void;
  /** `count` leaked allocations of the pool were released (and the release committed). */
  released(pool: string, count: number): void;
}

export const NO_LEAK_EVENTS: LeakEvents = {
  checked() {},
  released() {},
};
