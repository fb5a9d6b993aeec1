import { AppError } from "../errors.ts";

/** The data directory could not be opened (missing permissions, locked by another daemon, …). */
export class StoreOpenError extends AppError {
  readonly status = 500;
  readonly code = "STORE_OPEN_FAILED";
}
