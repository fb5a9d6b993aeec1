/**
 * A closed-loop HTTP/1.1 load client that speaks to a Unix socket as well as to TCP, which wrk
 * cannot: `--connections` keep-alive connections, each sending its next request as soon as the
 * previous answer is whole, for `--seconds`. Requests as bench/wrk's scripts make them:
 * `allocate` (a new vm_id every request), `pairs` (allocate, and release the vm allocated LAG
 * requests earlier, alternating) and `health`.
 *
 *   bun bench/load.ts (--socket PATH | --port N[,N…]) --script allocate [--connections 32] [--seconds 10] [--tag T]
 *
 * Several ports (daemons of one fleet) share the connections in turn: one client process whatever
 * the number of daemons, so that the client costs the machine the same in every case compared.
 * Prints the line bench/wrk/report.lua prints, which bench/run.sh parses:
 * `BENCH requests=… seconds=… rps=… p50=… p90=… p99=… max=… non2xx=… sockerr=…` (ms). Latencies
 * are as measured, send to last byte, without wrk's correction for coordinated omission: compare
 * them with other runs of this client, not with wrk's.
 */
import { parseArgs } from "node:util";
import type { Socket } from "bun";

const { values } = parseArgs({
  options: {
    socket: { type: "string" },
    port: { type: "string" },
    script: { type: "string", default: "allocate" },
    connections: { type: "string", default: "32" },
    seconds: { type: "string", default: "10" },
    tag: { type: "string", default: "load" },
  },
  strict: true,
});
if ((values.socket === undefined) === (values.port === undefined)) {
  throw new Error("usage: bun bench/load.ts (--socket PATH | --port N[,N…]) --script allocate|pairs|health");
}
const script = values.script as string;
if (!["allocate", "pairs", "health"].includes(script)) throw new Error(`unknown script ${script}`);
const connections = Number(values.connections);
const durationMs = Number(values.seconds) * 1000;
const LAG = 256;

let nextAllocate = 1;
let nextRelease = 1;
let allocateTurn = true;

function allocation(n: number): string {
  const body = `{"vm_id":"${values.tag}-${n}"}`;
  return `POST /api/v1/ip/allocate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
}

/** The next request of the script, as bench/wrk/pairs.lua orders allocate and release. */
function nextRequest(): string {
  if (script === "health") return "GET /api/v1/health HTTP/1.1\r\nHost: bench\r\n\r\n";
  if (script === "allocate" || allocateTurn || nextAllocate - nextRelease < LAG) {
    allocateTurn = false;
    return allocation(nextAllocate++);
  }
  allocateTurn = true;
  return `DELETE /api/v1/ip/release/${values.tag}-${nextRelease++} HTTP/1.1\r\nHost: bench\r\n\r\n`;
}

let latencies = new Float64Array(1 << 20);
let count = 0;
let non2xx = 0;
let socketErrors = 0;
let stopped = false;

function record(ms: number, status: number): void {
  if (stopped) return; // answers to requests in flight at the end are not counted, as in wrk
  if (count === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[count++] = ms;
  if (status < 200 || status > 299) non2xx++;
}

interface Connection {
  pending: Buffer;
  sentAt: number;
}

const HEAD_END = Buffer.from("\r\n\r\n");

function send(socket: Socket<Connection>): void {
  if (stopped) return void socket.end();
  const request = nextRequest();
  socket.data.sentAt = performance.now();
  if (socket.write(request) !== request.length) throw new Error("a request did not fit the socket's buffer");
}

/** Takes every whole answer off the front of what arrived; answers carry a Content-Length. */
function received(socket: Socket<Connection>, chunk: Buffer): void {
  const state = socket.data;
  state.pending = state.pending.length === 0 ? chunk : Buffer.concat([state.pending, chunk]);
  for (;;) {
    const headEnd = state.pending.indexOf(HEAD_END);
    if (headEnd < 0) return;
    const head = state.pending.toString("latin1", 0, headEnd);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) throw new Error(`an answer without Content-Length: ${head}`);
    const total = headEnd + 4 + Number(length[1]);
    if (state.pending.length < total) return;
    record(performance.now() - state.sentAt, Number(head.slice(9, 12)));
    state.pending = state.pending.subarray(total);
    send(socket);
  }
}

const handlers = {
  data: received,
  error() {
    socketErrors++;
  },
  close() {
    if (!stopped) socketErrors++;
  },
};

const ports = (values.port ?? "").split(",").map(Number);

function connect(_: unknown, index: number): Promise<Socket<Connection>> {
  const data = { pending: Buffer.alloc(0), sentAt: 0 };
  const port = ports[index % ports.length] as number;
  return values.socket !== undefined
    ? Bun.connect<Connection>({ unix: values.socket, socket: handlers, data })
    : Bun.connect<Connection>({ hostname: "127.0.0.1", port, socket: handlers, data });
}
const sockets = await Promise.all(Array.from({ length: connections }, connect));
const started = performance.now();
for (const socket of sockets) send(socket);
await Bun.sleep(durationMs);
stopped = true;
const seconds = (performance.now() - started) / 1000;
await Bun.sleep(50);
for (const socket of sockets) socket.end();

const sorted = latencies.subarray(0, count).sort();
const at = (p: number) => (count === 0 ? 0 : (sorted[Math.min(count - 1, Math.floor((count * p) / 100))] as number));
const fixed = (n: number) => n.toFixed(3);
process.stdout.write(
  `BENCH requests=${count} seconds=${seconds.toFixed(3)} rps=${(count / seconds).toFixed(1)} p50=${fixed(at(50))} p90=${fixed(at(90))} p99=${fixed(at(99))} max=${fixed(count === 0 ? 0 : (sorted[count - 1] as number))} non2xx=${non2xx} sockerr=${socketErrors}\n`,
);
process.exit(0);
