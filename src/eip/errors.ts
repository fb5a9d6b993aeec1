import { AppError } from "../errors.ts";

/** No EIP with that id in the caller's project (another project's EIP looks the same). */
export class EipNotFoundError extends AppError {
  readonly status = 404;
  readonly code = "NOT_FOUND";
}

/** The project already holds as many EIPs as its quota allows. */
export class QuotaExceededError extends AppError {
  readonly status = 409;
  readonly code = "QUOTA_EXCEEDED";
}

/** An idempotency key was reused with different parameters. */
export class IdempotencyMismatchError extends AppError {
  readonly status = 409;
  readonly code = "IDEMPOTENCY_MISMATCH";
}

/** The EIP is associated; it must be disassociated before it can be released. */
export class StillAssociatedError extends AppError {
  readonly status = 409;
  readonly code = "STILL_ASSOCIATED";
}
