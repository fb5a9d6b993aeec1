/**
 * A helper the testbed runs inside a network namespace (`ip netns exec NS bun netns-agent.ts ...`).
 * The test process cannot enter namespaces, but Unix sockets are files and work across them, so
 * the agent takes orders over HTTP on a Unix socket and does the networking in its namespace.
 *
 *   serve --control PATH [--echo NAME] [--port 7007]
 *     --echo NAME: a UDP responder on 0.0.0.0:PORT answering "who" with NAME (a testbed VM).
 *     Control API (POST, JSON):
 *       /request  {host, port, message, timeoutMs}                → {reply, from}   (nulls on timeout)
 *       /until    {host, port, message, expect, timeoutMs, intervalMs}
 *                 sends every intervalMs from one socket until a reply equals expect
 *                                                                  → {answeredAt (epoch ms, fractional) | null, attempts}
 *       /listen   {}                                               → {id, port}  (a UDP socket on 0.0.0.0:port)
 *       /received {id, timeoutMs}                                  → {from, message} of its first datagram (nulls on timeout)
 *       /send     {host, port, message}                            → {}
 *       /forward  {path, host, port}  a Unix socket at path whose connections are piped to TCP host:port
 *   request HOST PORT MESSAGE TIMEOUT_MS
 *     one UDP request from this namespace; prints {"reply", "from"} as JSON and exits.
 *
 * `serve` prints "ready" on stdout once everything listens.
 */
import dgram from "node:dgram";
import net from "node:net";

type Json = Record<string, unknown>;

const now = () => performance.timeOrigin + performance.now();

function bindUdp(port = 0): Promise<dgram.Socket> {
  const socket = dgram.createSocket("udp4");
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, "0.0.0.0", () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
  });
}

async function request(host: string, port: number, message: string, timeoutMs: number) {
  const socket = await bindUdp();
  try {
    return await new Promise<{ reply: string | null; from: string | null }>((resolve) => {
      const timer = setTimeout(() => resolve({ reply: null, from: null }), timeoutMs);
      socket.on("message", (data, remote) => {
        clearTimeout(timer);
        resolve({ reply: data.toString(), from: remote.address });
      });
      socket.send(message, port, host);
    });
  } finally {
    socket.close();
  }
}

async function until(body: Json) {
  const { host, port, message, expect } = body as { host: string; port: number; message: string; expect: string };
  const timeoutMs = Number(body.timeoutMs ?? 5000);
  const intervalMs = Number(body.intervalMs ?? 1);
  const socket = await bindUdp();
  let attempts = 0;
  try {
    return await new Promise<{ answeredAt: number | null; attempts: number }>((resolve) => {
      const done = (answeredAt: number | null) => {
        clearInterval(ticker);
        clearTimeout(timer);
        resolve({ answeredAt, attempts });
      };
      socket.on("message", (data) => {
        if (data.toString() === expect) done(now());
      });
      const send = () => {
        attempts++;
        socket.send(message, port, host);
      };
      const ticker = setInterval(send, intervalMs);
      const timer = setTimeout(() => done(null), timeoutMs);
      send();
    });
  } finally {
    socket.close();
  }
}

const listeners = new Map<number, { socket: dgram.Socket; first: Promise<{ from: string; message: string }> }>();
let nextId = 1;

async function listen() {
  const socket = await bindUdp();
  const first = new Promise<{ from: string; message: string }>((resolve) =>
    socket.once("message", (data, remote) => resolve({ from: remote.address, message: data.toString() })),
  );
  const id = nextId++;
  listeners.set(id, { socket, first });
  return { id, port: socket.address().port };
}

async function received(body: Json) {
  const entry = listeners.get(Number(body.id));
  if (!entry) throw new Error(`no listener ${body.id}`);
  const timeout = new Promise<{ from: null; message: null }>((resolve) =>
    setTimeout(() => resolve({ from: null, message: null }), Number(body.timeoutMs ?? 2000)),
  );
  try {
    return await Promise.race([entry.first, timeout]);
  } finally {
    listeners.delete(Number(body.id));
    entry.socket.close();
  }
}

async function send(body: Json) {
  const socket = await bindUdp();
  await new Promise<void>((resolve, reject) =>
    socket.send(String(body.message), Number(body.port), String(body.host), (error) =>
      error ? reject(error) : resolve(),
    ),
  );
  socket.close();
  return {};
}

async function forward(body: Json) {
  const path = String(body.path);
  const host = String(body.host);
  const port = Number(body.port);
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  return {};
}

async function echo(name: string, port: number) {
  const socket = await bindUdp(port);
  socket.on("message", (data, remote) => {
    if (data.toString() === "who") socket.send(name, remote.port, remote.address);
  });
}

async function serve(args: string[]) {
  const option = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const control = option("--control");
  if (!control) throw new Error("serve needs --control PATH");
  const name = option("--echo");
  if (name) await echo(name, Number(option("--port") ?? 7007));
  const routes: Record<string, (body: Json) => Promise<unknown>> = {
    "/request": (b) => request(String(b.host), Number(b.port), String(b.message), Number(b.timeoutMs ?? 1000)),
    "/until": until,
    "/listen": listen,
    "/received": received,
    "/send": send,
    "/forward": forward,
  };
  Bun.serve({
    unix: control,
    async fetch(req) {
      const route = routes[new URL(req.url).pathname];
      if (!route) return new Response("not found", { status: 404 });
      try {
        const body = req.headers.get("content-length") === "0" ? {} : ((await req.json()) as Json);
        return Response.json(await route(body));
      } catch (error) {
        return Response.json({ error: String(error) }, { status: 500 });
      }
    },
  });
  process.stdout.write("ready\n");
}

const [command, ...rest] = process.argv.slice(2);
if (command === "serve") {
  await serve(rest);
} else if (command === "request") {
  const [host, port, message, timeoutMs] = rest;
  const result = await request(String(host), Number(port), String(message), Number(timeoutMs ?? 1000));
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} else {
  process.stderr.write(
    "usage: netns-agent.ts serve --control PATH [--echo NAME] [--port N] | request HOST PORT MESSAGE TIMEOUT_MS\n",
  );
  process.exit(2);
}
