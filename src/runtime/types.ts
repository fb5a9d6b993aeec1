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

/** Upper bound the listener itself enforces; the API's own 64 KiB limit is checked before this. */
export const LISTENER_MAX_BODY = 1024 * 1024;
