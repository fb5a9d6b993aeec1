/** What the daemon needs from its JavaScript runtime; one implementation each for Bun and Deno. */

export type FetchHandler = (request: Request) => Response | Promise<Response>;

export interface Listener {
  /** The bound TCP port (for port 0), or null for a Unix socket. */
  readonly port: number | null;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  stop(): Promise<void>;
}

export interface Runtime {
  readonly name: "bun" | "deno";
  serveTcp(hostname: string, port: number, fetch: FetchHandler): Listener;
  serveUnix(path: string, fetch: FetchHandler): Listener;
  onSignal(signal: "SIGTERM" | "SIGINT", handler: () => void): void;
  /** An HTTP request to a server on a Unix socket (the client side of `ippool <command>`). */
  fetchUnix(socketPath: string, url: string, init: RequestInit): Promise<Response>;
  /**
   * Opens (creating, mode 0640) `path` and takes an exclusive flock(2) on it without waiting, held
   * until the process ends: 0 when taken, else the errno (EWOULDBLOCK: another process holds it).
   */
  tryLockExclusive(path: string): number;
}

/** open(2) and flock(2) flags, the same on x86_64 and aarch64 Linux. */
export const LOCK_OPEN_FLAGS = 0o2 | 0o100 | 0o2000000; // O_RDWR | O_CREAT | O_CLOEXEC
export const LOCK_FILE_MODE = 0o640;
export const LOCK_EX_NB = 2 | 4; // LOCK_EX | LOCK_NB

/**
 * What the listener itself accepts: any declared length, so that the API refuses an oversized
 * body with its own JSON 413 before reading it (http/body.ts) instead of Bun answering an empty
 * one. Nothing is buffered because of it: a body the handler does not read is held back by TCP
 * flow control, and one it reads is cut off at the API's 64 KiB limit.
 */
export const LISTENER_MAX_BODY = Number.MAX_SAFE_INTEGER;
