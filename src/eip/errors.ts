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

/** No configured host has a domain by that name or UUID. */
export class InstanceNotFoundError extends AppError {
  readonly status = 404;
  readonly code = "INSTANCE_NOT_FOUND";
}

/** The domain exists but is not running. */
export class InstanceNotRunningError extends AppError {
  readonly status = 409;
  readonly code = "INSTANCE_NOT_RUNNING";
}

/** The instance already has another EIP (one EIP per instance). */
export class InstanceHasEipError extends AppError {
  readonly status = 409;
  readonly code = "INSTANCE_HAS_EIP";
}

/** The EIP is associated with another instance and the request did not allow moving it. */
export class AlreadyAssociatedError extends AppError {
  readonly status = 409;
  readonly code = "ALREADY_ASSOCIATED";
}

/** Neither ippool's allocations nor libvirt know a private address for the instance. */
export class InstanceHasNoAddressError extends AppError {
  readonly status = 409;
  readonly code = "INSTANCE_HAS_NO_ADDRESS";
}

/** Disassociating an EIP that is not associated. */
export class NotAssociatedError extends AppError {
  readonly status = 409;
  readonly code = "NOT_ASSOCIATED";
}
