/**
 * What associations and reconciliation report as they finish, for metrics. The EIP code knows
 * nothing of how these are recorded (`src/metrics/` implements them).
 */
import type { ConvergeCounts } from "./hosts.ts";

export type AssociationOperation = "associate" | "disassociate";

export interface AssociationEvents {
  /** An association or disassociation succeeded after `seconds` (lock waits and host commands included). */
  succeeded(operation: AssociationOperation, seconds: number): void;
  /** It failed with this error code (`HOST_UNAVAILABLE`, `INSTANCE_NOT_FOUND`, …; `INTERNAL` for a bug). */
  failed(operation: AssociationOperation, code: string): void;
}

export interface ReconciliationEvents {
  /** A host was converged after `seconds`; `corrections` is the drift it fixed. */
  succeeded(host: string, seconds: number, corrections: ConvergeCounts): void;
  /** A reconciliation run on a host failed (host unreachable, a command failed). */
  failed(host: string): void;
}

export const NO_ASSOCIATION_EVENTS: AssociationEvents = { succeeded() {}, failed() {} };
export const NO_RECONCILIATION_EVENTS: ReconciliationEvents = { succeeded() {}, failed() {} };
