import type { FetchHandler, Listener, Runtime } from "./types.ts";
import { LISTENER_MAX_BODY } from "./types.ts";

export const bunRuntime: Runtime = {
  name: "bun",
  serveTcp(hostname: string, port: number, fetch: FetchHandler): Listener {
    // reusePort off: a second daemon on a taken port must fail, not share it silently.
    const server = Bun.serve({ hostname, port, reusePort: false, fetch, maxRequestBodySize: LISTENER_MAX_BODY });
    return { port: server.port ?? null, stop: () => server.stop() };
  },
  serveUnix(path: string, fetch: FetchHandler): Listener {
    const server = Bun.serve({ unix: path, fetch, maxRequestBodySize: LISTENER_MAX_BODY });
    return { port: null, stop: () => server.stop() };
  },
  onSignal(signal, handler) {
    process.on(signal, handler);
  },
  fetchUnix(socketPath, url, init) {
    return fetch(url, { ...init, unix: socketPath });
  },
};
