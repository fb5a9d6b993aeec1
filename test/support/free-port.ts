/** A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick), for a server a bench or suite starts. */
export function freePort(): number {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = server.port;
  server.stop(true);
  if (port === undefined) throw new Error("no free port");
  return port;
}
