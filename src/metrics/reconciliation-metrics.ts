/** Reconciliation per host: run durations, failed runs and the drift corrected. */
import { Counter, Histogram, type Registry } from "prom-client";
import type { ReconciliationEvents } from "../eip/events.ts";
import { HOST_SECONDS_BUCKETS } from "./association-metrics.ts";

const CORRECTIONS = ["added", "removed", "changed"] as const;

/** `hosts`: the configured host names, whose series start at zero. */
export function reconciliationMetrics(registry: Registry, hosts: readonly string[]): ReconciliationEvents {
  const duration = new Histogram({
    name: "ippool_reconciliation_duration_seconds",
    help: "Time to read a host's NAT state and converge it to the records (successful runs).",
    labelNames: ["host"] as const,
    buckets: HOST_SECONDS_BUCKETS,
    registers: [registry],
  });
  const failures = new Counter({
    name: "ippool_reconciliation_failures_total",
    help: "Reconciliation runs that failed (host unreachable or a command failed).",
    labelNames: ["host"] as const,
    registers: [registry],
  });
  const corrections = new Counter({
    name: "ippool_reconciliation_corrections_total",
    help: "Drift corrected on a host: associations added (missing), removed (stale) or changed (wrong private address).",
    labelNames: ["host", "kind"] as const,
    registers: [registry],
  });
  for (const host of hosts) {
    duration.zero({ host });
    failures.inc({ host }, 0);
    for (const kind of CORRECTIONS) corrections.inc({ host, kind }, 0);
  }
  return {
    succeeded(host, seconds, drift) {
      duration.observe({ host }, seconds);
      for (const kind of CORRECTIONS) if (drift[kind] > 0) corrections.inc({ host, kind }, drift[kind]);
    },
    failed: (host) => failures.inc({ host }),
  };
}
