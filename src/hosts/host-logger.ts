import type { Fields } from "../log/logger.ts";

/** The subset of `Logger` the host driver uses. */
export interface HostLogger {
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
}

/**
 * Calls a listener or an events sink the connection does not own: whatever it throws is logged,
 * never let through into the connection's own state changes or command results.
 */
export function callListener(logger: HostLogger | undefined, host: string, call: () => void): void {
  try {
    call();
  } catch (error) {
    logger?.warn("host connection listener failed", { host, error: String(error) });
  }
}
