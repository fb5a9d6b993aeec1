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
  onSignal(signal: "SIGTERM" | "SIGINT" | "SIGHUP", handler: () => void): void;
  /** An HTTP request to a server on a Unix socket (the client side of `ippool <command>`). */
  fetchUnix(socketPath: string, url: string, init: RequestInit): Promise<Response>;
  /**
   * Takes a flock(2) on `path` without waiting, held until the process ends: exclusive on a file
   * it creates if needed (mode 0640), or shared on an existing file, which it only opens for
   * reading. Returns 0 when taken, else the errno (EWOULDBLOCK: another process holds it).
   */
  tryLock(path: string, kind: LockKind): number;
  /** The argv that runs this same executable again (arguments are appended). */
  selfCommand(): string[];
}

export type LockKind = "exclusive" | "shared";

/** open(2) and flock(2) arguments for a lock of `kind`, the same on x86_64 and aarch64 Linux. */
export function lockCall(kind: LockKind): { openFlags: number; mode: number; operation: number } {
  const O_RDONLY = 0;
  const O_RDWR = 0o2;
  const O_CREAT = 0o100;
  const O_CLOEXEC = 0o2000000;
  const [LOCK_SH, LOCK_EX, LOCK_NB] = [1, 2, 4];
  return kind === "exclusive"
    ? { openFlags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o640, operation: LOCK_EX | LOCK_NB }
    : { openFlags: O_RDONLY | O_CLOEXEC, mode: 0, operation: LOCK_SH | LOCK_NB };
}

/**
 * What the listener itself accepts: any declared length, so that the API refuses an oversized
 * body with its own JSON 413 before reading it (http/body.ts) instead of Bun answering an empty
 * one. Nothing is buffered because of it: a body the handler does not read is held back by TCP
 * flow control, and one it reads is cut off at the API's 64 KiB limit.
 */
export const LISTENER_MAX_BODY = Number.MAX_SAFE_INTEGER;
