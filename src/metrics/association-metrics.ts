/** EIP associations and disassociations: how long successful ones take, and failures by error code. */
import { Counter, Histogram, type Registry } from "prom-client";
import type { AssociationEvents, AssociationOperation } from "../eip/events.ts";

/** Host work over SSH: a few ms per command, ~30 ms for virsh, up to the command timeout (10 s). */
export const HOST_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const OPERATIONS: readonly AssociationOperation[] = ["associate", "disassociate"];

export function associationMetrics(registry: Registry): AssociationEvents {
  const duration = new Histogram({
    name: "ippool_eip_association_duration_seconds",
    help: "Time to associate or disassociate an elastic IP (successful requests; lock waits and host commands included).",
    labelNames: ["operation"] as const,
    buckets: HOST_SECONDS_BUCKETS,
    registers: [registry],
  });
  const failures = new Counter({
    name: "ippool_eip_association_failures_total",
    help: "Associations and disassociations that failed, by error code (HOST_UNAVAILABLE, HOST_COMMAND_FAILED, INSTANCE_NOT_FOUND, …).",
    labelNames: ["operation", "code"] as const,
    registers: [registry],
  });
  for (const operation of OPERATIONS) duration.zero({ operation });
  return {
    succeeded: (operation, seconds) => duration.observe({ operation }, seconds),
    failed: (operation, code) => failures.inc({ operation, code }),
  };
}
