import { type FetchHandler, type Listener, lockCall, type Runtime } from "./types.ts";

interface DenoHttpServer {
  readonly addr: { port?: number };
  shutdown(): Promise<void>;
}

/** The few Deno APIs used here, declared so the Bun-side typechecker accepts this file. */
declare const Deno: {
  serve(
    options: {
      hostname?: string;
      port?: number;
      path?: string;
      transport?: "unix";
      reusePort?: boolean;
      onListen?: () => void;
    },
    handler: FetchHandler,
  ): DenoHttpServer;
  addSignalListener(signal: "SIGTERM" | "SIGINT" | "SIGHUP", handler: () => void): void;
  createHttpClient(options: { proxy: { transport: "unix"; path: string } }): unknown;
  dlopen(path: string, symbols: Record<string, { parameters: string[]; result: string }>): { symbols: LibcSymbols };
  UnsafePointerView: new (pointer: unknown) => { getInt32(): number };
  execPath(): string;
  readonly mainModule: string;
};

interface LibcSymbols {
  open(path: Uint8Array, flags: number, mode: number): number;
  flock(fd: number, operation: number): number;
  __errno_location(): unknown;
}

function listener(server: DenoHttpServer, port: number | null): Listener {
  return { port, stop: () => server.shutdown() };
}

export const denoRuntime: Runtime = {
  name: "deno",
  serveTcp(hostname: string, port: number, fetch: FetchHandler): Listener {
    const server = Deno.serve({ hostname, port, reusePort: false, onListen: () => {} }, fetch);
    return listener(server, server.addr.port ?? null);
  },
  serveUnix(path: string, fetch: FetchHandler): Listener {
    // Requests on a Unix socket carry a URL whose host is the socket path; give the router a plain one.
    const server = Deno.serve({ transport: "unix", path, onListen: () => {} }, (request) => {
      const url = new URL(request.url);
      return fetch(new Request(`http://localhost${url.pathname}${url.search}`, request));
    });
    return listener(server, null);
  },
  onSignal(signal, handler) {
    Deno.addSignalListener(signal, handler);
  },
  fetchUnix(socketPath, url, init) {
    const client = Deno.createHttpClient({ proxy: { transport: "unix", path: socketPath } });
    return fetch(url, { ...init, client } as RequestInit);
  },
  selfCommand() {
    return [Deno.execPath(), "run", "-A", Deno.mainModule];
  },
  tryLock(path, kind) {
    // As in bun.ts: flock(2) from libc, the descriptor kept open for the process's life.
    const { symbols } = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
      flock: { parameters: ["i32", "i32"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    });
    const errno = () => new Deno.UnsafePointerView(symbols.__errno_location()).getInt32();
    const { openFlags, mode, operation } = lockCall(kind);
    const fd = symbols.open(new TextEncoder().encode(`${path}\0`), openFlags, mode);
    if (fd < 0) return errno();
    return symbols.flock(fd, operation) === 0 ? 0 : errno();
  },
};
