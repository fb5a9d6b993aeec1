import { ConfigError } from "../config/errors.ts";
import { AppError } from "../errors.ts";

/**
 * A host cannot be reached: never connected, not connected right now, or the connection dropped
 * while a command ran. The message names the host and the last connection error.
 */
export class HostUnavailableError extends AppError {
  readonly status: number = 502;
  readonly code: string = "HOST_UNAVAILABLE";
}

/**
 * The host presented a key other than the pinned one; the connection was refused. A subclass of
 * `HostUnavailableError`: callers that only care whether the host can be used catch that.
 */
export class HostKeyMismatchError extends HostUnavailableError {
  override readonly code: string = "HOST_KEY_MISMATCH";
}

/** A command on a host exited non-zero or timed out; the message names the command and the first line of stderr. */
export class HostCommandFailedError extends AppError {
  readonly status = 502;
  readonly code = "HOST_COMMAND_FAILED";
}

/** A command on a host did not finish within its timeout (it is killed there too). */
export class HostCommandTimeoutError extends HostCommandFailedError {}

/**
 * A value that may not go into a host command (not a valid IPv4 address, interface name, libvirt
 * domain name/UUID or libvirt URI). Raised before any command string is built.
 */
export class InvalidCommandArgumentError extends AppError {
  readonly status = 400;
  readonly code = "INVALID_ARGUMENT";
}

/**
 * A `[[hosts]]` entry cannot be used (private key file missing, unreadable, not a key, or readable by
 * group/others). Found when the host registry is built, so the daemon refuses to start; a
 * `ConfigError`, so it is reported like every other configuration error (exit code 2).
 */
export class HostConfigError extends ConfigError {}
