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
}

/**
 * What the listener itself accepts: any declared length, so that the API refuses an oversized
 * body with its own JSON 413 before reading it (http/body.ts) instead of Bun answering an empty
 * one. Nothing is buffered because of it: a body the handler does not read is held back by TCP
 * flow control, and one it reads is cut off at the API's 64 KiB limit.
 */
export const LISTENER_MAX_BODY = Number.MAX_SAFE_INTEGER;
