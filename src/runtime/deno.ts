import type { FetchHandler, Listener, Runtime } from "./types.ts";

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
  addSignalListener(signal: "SIGTERM" | "SIGINT", handler: () => void): void;
  createHttpClient(options: { proxy: { transport: "unix"; path: string } }): unknown;
};

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
};
