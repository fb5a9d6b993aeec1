import { AppError } from "../errors.ts";

/** A listener could not be set up (port taken, another daemon on the socket, …). */
export class ListenError extends AppError {
  readonly status = 500;
  readonly code = "LISTEN_FAILED";
}

/** Another daemon holds the data directory's lock. */
export class DataDirInUseError extends AppError {
  readonly status = 409;
  readonly code = "DATA_DIR_IN_USE";
}

/** The data directory's lock file cannot be opened or locked (permissions, a read-only mount). */
export class DataDirLockError extends AppError {
  readonly status = 500;
  readonly code = "DATA_DIR_LOCK_FAILED";
}
