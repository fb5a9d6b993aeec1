/**
 * Telling a failure to reach the database apart from a failing statement: the first is the
 * fleet's state being out of reach (503, try again), the second a bug or a constraint.
 */
import { DatabaseUnreachableError } from "./errors.ts";

/** Codes of the driver and the system for a connection that could not be made or was lost. */
const CONNECTION_CODES = new Set([
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

export function isConnectionFailure(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  return CONNECTION_CODES.has(code) || CONNECTION_STATES.has(code) || code.startsWith("08");
}
