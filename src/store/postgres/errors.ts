import { AppError } from "../../errors.ts";

/** The database's schema is newer than this binary: it must not write into a schema it does not know. */
export class SchemaTooNewError extends AppError {
  readonly status = 503;
  readonly code = "SCHEMA_TOO_NEW";
}

/** The database's schema is older than this binary's (or missing): `ippool db migrate` brings it up. */
export class SchemaTooOldError extends AppError {
  readonly status = 503;
  readonly code = "SCHEMA_TOO_OLD";
}

/** The database could not be reached or refused the connection. */
export class DatabaseUnreachableError extends AppError {
  readonly status = 503;
  readonly code = "DATABASE_UNREACHABLE";
}

/**
 * A request needed the shared store and could not reach it (the database is down, failing over,
 * or cut off from this daemon): nothing was changed, and the same request may be sent again.
 */
export class StoreUnavailableError extends AppError {
  readonly status = 503;
  readonly code = "STORE_UNAVAILABLE";
}

/**
 * Fleet mode: another daemon has held a lock this change needs (an EIP, an instance, a host) for
 * longer than the lock timeout, most likely a host change hung there. Nothing was changed here.
 */
export class LockTimeoutError extends AppError {
  readonly status = 503;
  readonly code = "LOCK_TIMEOUT";
}

/**
 * Another live daemon holds this daemon's name in the fleet (membership.ts): at start the daemon
 * refuses to run (exit 2); while it runs, it stops.
 */
export class DaemonNameTakenError extends AppError {
  readonly status = 503;
  readonly code = "DAEMON_NAME_TAKEN";
}

/** `ippool db import` copies into an empty database only: it never merges into a fleet's state. */
export class ImportTargetNotEmptyError extends AppError {
  readonly status = 409;
  readonly code = "IMPORT_TARGET_NOT_EMPTY";
}
