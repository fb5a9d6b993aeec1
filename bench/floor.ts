/**
 * The floor of ippool's stack: the least a durable allocate can cost on Bun + lmdb-js, the
 * reference `make bench` measures ippool against. A bare `Bun.serve` route reads the body,
 * `JSON.parse`s it, writes in one lmdb-js transaction what ippool writes for an allocation (the
 * record, the address index entry, a 512-byte bitmap page and the pool's counters, in sub-databases
 * opened as ippool opens them), waits for the commit and its flush, and answers 201 with the body
 * ippool answers. No validation, no repeat check, no routing, logging or metrics: the cursor and
 * the page live in memory. `GET /api/v1/health` answers as ippool's does.
 *
 * `bun bench/floor.ts --data DIR (--port N | --socket PATH)`; prints `FLOOR ready` once listening.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { open } from "lmdb";

const { values } = parseArgs({
  options: { data: { type: "string" }, port: { type: "string" }, socket: { type: "string" } },
  strict: true,
});
if (values.data === undefined || (values.port === undefined) === (values.socket === undefined)) {
  throw new Error("usage: bun bench/floor.ts --data DIR (--port N | --socket PATH)");
}

const POOL = "bench";
const BASE = 0x0a000000; // 10.0.0.0/12, as bench/run.sh's pool
const PAGE_BITS = 4096;

mkdirSync(values.data, { recursive: true });
const root = open({ path: join(values.data, "ippool.mdb"), maxDbs: 16, mapSize: 2 ** 30, overlappingSync: false });
const counters = root.openDB<Buffer, string>({ name: "pool-counters", encoding: "binary" });
const pages = root.openDB<Buffer, [string, number]>({ name: "pool-pages", encoding: "binary" });
const allocations = root.openDB<object, [string, string]>({ name: "allocations" });
const addresses = root.openDB<string, [string, number]>({ name: "addresses", encoding: "string" });

let cursor = 2; // .0 is the network, .1 the gateway
const page = new Uint32Array(PAGE_BITS / 32);
const gateway = "10.0.0.1";
const network = "10.0.0.0/12";

function dotted(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

async function allocate(request: Request): Promise<Response> {
  const body = JSON.parse(await request.text()) as { vm_id: string; hostname?: string };
  const ordinal = cursor++;
  const ip = BASE + ordinal;
  const createdAt = Date.now();
  const pageIndex = Math.floor(ordinal / PAGE_BITS);
  const bit = ordinal % PAGE_BITS;
  page[bit >>> 5] = (page[bit >>> 5] as number) | (1 << (bit & 31));
  if (bit === PAGE_BITS - 1) page.fill(0);
  const count = Buffer.allocUnsafe(8);
  count.writeUInt32LE(cursor, 0);
  count.writeUInt32LE(cursor - 2, 4);
  await root.transaction(() => {
    allocations.putSync([POOL, body.vm_id], { ip, createdAt, ...(body.hostname ? { hostname: body.hostname } : {}) });
    addresses.putSync([POOL, ip], body.vm_id);
    pages.putSync([POOL, pageIndex], Buffer.from(page.buffer, 0, 512));
    counters.putSync(POOL, count);
  });
  const answer = {
    ip: dotted(ip),
    vm_id: body.vm_id,
    pool: POOL,
    gateway,
    network,
    created_at: new Date(createdAt).toISOString(),
  };
  return new Response(JSON.stringify(answer), {
    status: 201,
    headers: { "content-type": "application/json", "x-ippool-created": "true" },
  });
}

const HEALTH = JSON.stringify({ status: "healthy" });

function fetch(request: Request): Response | Promise<Response> {
  const path = request.url.slice(request.url.indexOf("/", 8));
  if (request.method === "POST" && path === "/api/v1/ip/allocate") return allocate(request);
  if (path === "/api/v1/health") return new Response(HEALTH, { headers: { "content-type": "application/json" } });
  return new Response("not found", { status: 404 });
}

if (values.socket !== undefined) Bun.serve({ unix: values.socket, fetch });
else Bun.serve({ hostname: "127.0.0.1", port: Number(values.port), reusePort: false, fetch });
process.stdout.write("FLOOR ready\n");
