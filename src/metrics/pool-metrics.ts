/**
 * Address pools (VM and EIP): addresses by state and pool size, read from the store's counters
 * and the layouts at each scrape (nothing kept here that could drift from the store), and
 * allocations, releases and refusals, counted as the services report them after the commit.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { ALLOCATION_FAILURE_REASONS, type PoolEvents, type PoolKind } from "../pool/events.ts";
import type { PoolUsage } from "../pool/service.ts";
import { Tally } from "./tally.ts";

export interface PoolMetricsSource {
  /** The configured pools, so their counters exist (at zero) before anything happens. */
  readonly pools: readonly { readonly pool: string; readonly kind: PoolKind }[];
  /** Every pool's current usage; called at each scrape. */
  usage(): Promise<Iterable<PoolUsage>>;
}

export function poolMetrics(registry: Registry, source: PoolMetricsSource): PoolEvents {
  new Gauge({
    name: "ippool_pool_addresses",
    help: "Addresses of a pool by state: allocated, available (together the pool size) and reserved (never handed out: network, broadcast, gateway, reservations).",
    labelNames: ["pool", "kind", "state"] as const,
    registers: [registry],
    async collect() {
      const usages = await source.usage();
      this.reset();
      for (const usage of usages) {
        const { pool, kind } = usage;
        this.set({ pool, kind, state: "allocated" }, usage.allocated);
        this.set({ pool, kind, state: "available" }, usage.available);
        this.set({ pool, kind, state: "reserved" }, usage.reserved);
      }
    },
  });
  new Gauge({
    name: "ippool_pool_size_addresses",
    help: "Addresses a pool can hand out (its CIDR without the reserved ones).",
    labelNames: ["pool", "kind"] as const,
    registers: [registry],
    async collect() {
      const usages = await source.usage();
      this.reset();
      for (const { pool, kind, usable } of usages) this.set({ pool, kind }, usable);
    },
  });
  const allocated = new Tally<"pool" | "kind">();
  const released = new Tally<"pool" | "kind">();
  const failed = new Tally<"pool" | "kind" | "reason">();
  const allocations = new Counter({
    name: "ippool_pool_allocations_total",
    help: "New allocations committed (repeats of an existing allocation are not counted).",
    labelNames: ["pool", "kind"] as const,
    registers: [registry],
    collect() {
      allocated.flushInto(this);
    },
  });
  const releases = new Counter({
    name: "ippool_pool_releases_total",
    help: "Releases committed.",
    labelNames: ["pool", "kind"] as const,
    registers: [registry],
    collect() {
      released.flushInto(this);
    },
  });
  const failures = new Counter({
    name: "ippool_pool_allocation_failures_total",
    help: "Allocations refused, by reason (exhausted, address_in_use, invalid_ip, vm_has_other_address, quota_exceeded, idempotency_mismatch, internal).",
    labelNames: ["pool", "kind", "reason"] as const,
    registers: [registry],
    collect() {
      failed.flushInto(this);
    },
  });
  for (const { pool, kind } of source.pools) {
    allocations.inc({ pool, kind }, 0);
    releases.inc({ pool, kind }, 0);
    for (const reason of ALLOCATION_FAILURE_REASONS[kind]) failures.inc({ pool, kind, reason }, 0);
  }
  return {
    allocated: (pool, kind) => allocated.add(`${kind} ${pool}`, () => ({ pool, kind })),
    released: (pool, kind) => released.add(`${kind} ${pool}`, () => ({ pool, kind })),
    allocationFailed: (pool, kind, reason) => failed.add(`${kind} ${reason} ${pool}`, () => ({ pool, kind, reason })),
  };
}
