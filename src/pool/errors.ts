import { AppError } from "../errors.ts";

/**
 * The messages the original IP Pool API answered with (its handlers.rs): clients written for it
 * may compare them, so the errors it could answer say exactly these.
 */
export const ORIGINAL_MESSAGES = {
  exhausted: "No available IPs in pool",
  notFound: "IP not found",
  invalidIp: "Invalid IP address",
} as const;

/** No free address is left in the pool (the original API answers 503). */
export class PoolExhaustedError extends AppError {
  readonly status = 503;
  readonly code = "POOL_EXHAUSTED";
}

/** No allocation for that vm_id or address. */
export class AllocationNotFoundError extends AppError {
  readonly status = 404;
  readonly code = "NOT_FOUND";
}

/** The pool named in a request is not configured. */
export class PoolNotFoundError extends AppError {
  readonly status = 404;
  readonly code = "POOL_NOT_FOUND";
}

/** The requested address is held by another VM. */
export class AddressInUseError extends AppError {
  readonly status = 409;
  readonly code = "ADDRESS_IN_USE";
}

/** The VM already holds a different address in this pool than the one requested. */
export class VmHasOtherAddressError extends AppError {
  readonly status = 409;
  readonly code = "VM_HAS_OTHER_ADDRESS";
}

/** The stored pools cannot adopt the configured layouts without losing allocations; the daemon must not start. */
export class PoolStateConflictError extends AppError {
  readonly status = 500;
  readonly code = "POOL_STATE_CONFLICT";
}

/**
 * The leak check could not ask every configured host for its domains (down, unreachable, or virsh
 * failed there): nothing is reported as leaked and nothing is released. The message names each
 * host and why.
 */
export class LeakCheckIncompleteError extends AppError {
  readonly status = 503;
  readonly code = "LEAK_CHECK_INCOMPLETE";
}

/**
 * A release reported by a host that is no longer the VM's host (after a live migration the source's
 * hook releases after the destination's has allocated): nothing is released.
 */
export class VmOnOtherHostError extends AppError {
  readonly status = 409;
  readonly code = "VM_ON_OTHER_HOST";
}

/** The allocation is recorded, but its DHCP reservation could not be written: the VM would not receive it. */
export class DeliveryFailedError extends AppError {
  readonly status = 502;
  readonly code = "DHCP_RESERVATION_FAILED";
}
