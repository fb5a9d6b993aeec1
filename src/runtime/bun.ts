import { dlopen, FFIType, read } from "bun:ffi";
import type { Server } from "bun";
import type { FetchHandler, Listener, Runtime } from "./types.ts";
import { LISTENER_MAX_BODY, lockCall } from "./types.ts";

/**
 * How long a connection may sit after an answer before its next request head has arrived whole;
 * a new connection gets Bun's fixed 10 s for its first. Bytes arriving do not restart either, so
 * a client trickling a head one byte at a time is dropped like an idle one.
 */
const IDLE_TIMEOUT_S = 10;

export const bunRuntime: Runtime = {
  name: "bun",
  serveTcp(hostname: string, port: number, fetch: FetchHandler): Listener {
    // reusePort off: a second daemon on a taken port must fail, not share it silently.
    const server = Bun.serve({
      hostname,
      port,
      reusePort: false,
      fetch: liftedWhileHandled(fetch),
      maxRequestBodySize: LISTENER_MAX_BODY,
      idleTimeout: IDLE_TIMEOUT_S,
    });
    return { port: server.port ?? null, stop: () => server.stop() };
  },
  serveUnix(path: string, fetch: FetchHandler): Listener {
    // On a Unix socket Bun does not keep a lifted per-request timeout reliably: a request waiting
    // 12 s on a host was still cut off at 10 s in 6 of 16 tries. Only the listener's idleTimeout
    // holds (untyped for Unix sockets, but honoured), so this socket, open to local administrators
    // only (mode 0660), has no idle limit, and so no timer to lift while a request is handled.
    const options = { unix: path, fetch, maxRequestBodySize: LISTENER_MAX_BODY };
    const server = Bun.serve({ ...options, idleTimeout: 0 } as typeof options);
    return { port: null, stop: () => server.stop() };
  },
  onSignal(signal, handler) {
    process.on(signal, handler);
  },
  fetchUnix(socketPath, url, init) {
    return fetch(url, { ...init, unix: socketPath });
  },
  selfCommand() {
    // A compiled executable's entry point lives in Bun's embedded file system; it is the binary itself.
    return Bun.main.startsWith("/$bunfs/") ? [process.execPath] : [process.execPath, Bun.main];
  },
  tryLock(path, kind) {
    // Neither Bun nor node:fs has flock(2); libc has. The descriptor is never closed: the lock
    // lasts as long as the process.
    const { symbols } = dlopen("libc.so.6", {
      open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
      flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
      __errno_location: { args: [], returns: FFIType.ptr },
    });
    const errno = () =>
      read.i32(symbols.__errno_location() as NonNullable<ReturnType<typeof symbols.__errno_location>>, 0);
    const { openFlags, mode, operation } = lockCall(kind);
    const fd = symbols.open(Buffer.from(`${path}\0`), openFlags, mode);
    if (fd < 0) return errno();
    return symbols.flock(fd, operation) === 0 ? 0 : errno();
  },
};

/**
 * Bun's idle timer also runs while a request is being handled, so a request waiting on a slow host
 * (`command_timeout_ms` may be minutes) was cut off without an answer. It is lifted while the
 * handler runs — the body has its own deadline there (`http/body.ts`, 408), the head has arrived
 * whole by then — and set again once the answer is ready, or an idle keep-alive connection would
 * be held open for ever.
 */
function liftedWhileHandled(
  fetch: FetchHandler,
): (request: Request, server: Server<undefined>) => ReturnType<FetchHandler> {
  return async (request, server) => {
    server.timeout(request, 0);
    try {
      return await fetch(request);
    } finally {
      server.timeout(request, IDLE_TIMEOUT_S);
    }
  };
}
