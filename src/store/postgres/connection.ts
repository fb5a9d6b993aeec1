/**
 * Telling a failure to reach the database apart from a failing statement: the first is the
 * fleet's state being out of reach (503, try again), the second a bug or a constraint.
 */
import { SILENT_DATABASE } from "./deadline.ts";
import { DatabaseUnreachableError, StoreUnavailableError } from "./errors.ts";

/**
 * Codes of the driver and the system for a connection that could not be made or was lost, and the
 * store's own for a database that did not answer in time (deadline.ts).
 */
const CONNECTION_CODES = new Set([
  SILENT_DATABASE,
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/** SQLSTATEs of the same: login refused, no such database, server shutting down or starting, read-only standby. */
const CONNECTION_STATES = new Set(["28P01", "28000", "3D000", "57P01", "57P02", "57P03", "25006"]);

/** A failure to reach or log in to the database as a command or a start reports it (exit 3). */
export function unreachable(error: unknown): DatabaseUnreachableError | undefined {
  if (!isConnectionFailure(error)) return undefined;
  return new DatabaseUnreachableError(`cannot use the database: ${(error as Error).message}`);
}

/**
 * A lost or refused connection as the API answers it (503). A commit whose connection broke is
 * not known to have failed; the answer says so, and the request is safe to repeat (allocation
 * and release are idempotent by vm_id).
 */
export function unavailable(error: unknown): StoreUnavailableError | undefined {
  if (!isConnectionFailure(error)) return undefined;
  return new StoreUnavailableError(
    `the shared store cannot be reached (${(error as Error).message}); whether a change was made is not known: send the request again`,
  );
}

export function isConnectionFailure(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  return CONNECTION_CODES.has(code) || CONNECTION_STATES.has(code) || code.startsWith("08");
}
