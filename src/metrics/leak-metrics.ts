/**
 * Leak detection per VM pool: how many leaked allocations the last complete check found, and how
 * many were released. Set and counted as the leak check reports (`pool/leaks.ts`).
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { LeakEvents } from "../pool/events.ts";

/** `pools`: the configured VM pools, whose series start at zero. */
export function leakMetrics(registry: Registry, pools: readonly string[]): LeakEvents {
  const found = new Gauge({
    name: "ippool_pool_leaked_allocations",
    help: "Allocations older than the grace period whose VM no configured host has, as found by the last complete leak check (0 before the first).",
    labelNames: ["pool"] as const,
    registers: [registry],
  });
  const released = new Counter({
    name: "ippool_pool_leaks_released_total",
    help: "Leaked allocations released (ippool gc, POST /api/v1/leaks/release); also counted in ippool_pool_releases_total.",
    labelNames: ["pool"] as const,
    registers: [registry],
  });
  for (const pool of pools) {
    found.set({ pool }, 0);
    released.inc({ pool }, 0);
  }
  return {
    checked(checkedPools, leaksByPool) {
      for (const pool of checkedPools) found.set({ pool }, leaksByPool.get(pool) ?? 0);
    },
    released: (pool, count) => released.inc({ pool }, count),
  };
}
