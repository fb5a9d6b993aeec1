import { AppError } from "../errors.ts";

/** The data directory could not be opened (missing permissions, locked by another daemon, …). */
export class StoreOpenError extends AppError {
  readonly status = 500;
  readonly code = "STORE_OPEN_FAILED";
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

/** The data directory's store is missing, empty or damaged where one existed: the daemon refuses to start. */
export class StoreDamagedError extends AppError {
  readonly status = 500;
  readonly code = "STORE_DAMAGED";
}

/** A change could not be written: the data directory's file system is full. Reads go on. */
export class StorageFullError extends AppError {
  readonly status = 507;
  readonly code = "STORAGE_FULL";
}
