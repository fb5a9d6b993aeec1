/**
 * Which listener a request came in on. The Unix socket is the local admin's door (file mode
 * 0660), TCP is everyone else's; routes that authorise differently ask here. Set by the
 * listener's handler, never taken from anything the client sends.
 */
export type Transport = "tcp" | "unix";

const transports = new WeakMap<Request, Transport>();

export function markTransport(request: Request, transport: Transport): void {
  transports.set(request, transport);
}

export function transportOf(request: Request): Transport {
  return transports.get(request) ?? "tcp";
}
