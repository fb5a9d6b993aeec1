/**
 * The floor of ippool's stack: the least a durable allocate can cost on Bun + lmdb-js, the
 * reference `make bench` measures ippool against. A bare `Bun.serve` route reads the body,
 * `JSON.parse`s it, writes in one lmdb-js transaction what ippool writes for an allocation (the
 * record, the address index entry, a 512-byte bitmap page and the pool's counters, in sub-databases
 * opened as ippool opens them), waits for the commit and its flush, and answers 201 with the body
 * ippool answers. `DELETE /api/v1/ip/release/VM` undoes it the same way (record and index entry
 * removed, page and counters written). No validation, no repeat check, no routing, logging or
 * metrics: the cursor, the page and which vm holds which address live in memory.
 * `GET /api/v1/health` answers as ippool's does.
 *
 * `bun bench/floor.ts --data DIR (--port N | --socket PATH)`; prints `FLOOR ready port=N` (the bound
 * port; 0 picks one) or `FLOOR ready socket=PATH` once listening.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { open } from "lmdb";
import { formatIpv4 } from "../src/net/ipv4.ts";

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
let allocated = 0;
// One page of bits stands for every page: the floor writes the 512 bytes ippool writes; what they
// say is not a bitmap anyone reads.
const page = new Uint32Array(PAGE_BITS / 32);
const held = new Map<string, { ordinal: number; createdAt: number }>();
const gateway = "10.0.0.1";
const network = "10.0.0.0/12";

function flipBit(ordinal: number): void {
  const bit = ordinal % PAGE_BITS;
  page[bit >>> 5] = (page[bit >>> 5] as number) ^ (1 << (bit & 31));
}

function counterBytes(): Buffer {
  const count = Buffer.allocUnsafe(8);
  count.writeUInt32LE(cursor, 0);
  count.writeUInt32LE(allocated, 4);
  return count;
}

function view(vmId: string, ordinal: number, createdAt: number) {
  return {
    ip: formatIpv4(BASE + ordinal),
    vm_id: vmId,
    pool: POOL,
    gateway,
    network,
    created_at: new Date(createdAt).toISOString(),
  };
}

function json(status: number, body: object, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

async function allocate(request: Request): Promise<Response> {
  const body = JSON.parse(await request.text()) as { vm_id: string; hostname?: string };
  const ordinal = cursor++;
  allocated++;
  const ip = BASE + ordinal;
  const createdAt = Date.now();
  flipBit(ordinal);
  held.set(body.vm_id, { ordinal, createdAt });
  await root.transaction(() => {
    allocations.putSync([POOL, body.vm_id], { ip, createdAt, ...(body.hostname ? { hostname: body.hostname } : {}) });
    addresses.putSync([POOL, ip], body.vm_id);
    pages.putSync([POOL, Math.floor(ordinal / PAGE_BITS)], Buffer.from(page.buffer, 0, 512));
    counters.putSync(POOL, counterBytes());
  });
  return json(201, view(body.vm_id, ordinal, createdAt), { "x-ippool-created": "true" });
}

async function release(vmId: string): Promise<Response> {
  const holding = held.get(vmId);
  if (!holding) return json(404, { error: "IP not found" });
  held.delete(vmId);
  allocated--;
  flipBit(holding.ordinal);
  await root.transaction(() => {
    allocations.removeSync([POOL, vmId]);
    addresses.removeSync([POOL, BASE + holding.ordinal]);
    pages.putSync([POOL, Math.floor(holding.ordinal / PAGE_BITS)], Buffer.from(page.buffer, 0, 512));
    counters.putSync(POOL, counterBytes());
  });
  return json(200, {
    message: "IP released successfully",
    vm_id: vmId,
    released: [view(vmId, holding.ordinal, holding.createdAt)],
  });
}

const HEALTH = JSON.stringify({ status: "healthy" });
const RELEASE = "/api/v1/ip/release/";

function fetch(request: Request): Response | Promise<Response> {
  const path = request.url.slice(request.url.indexOf("/", 8));
  if (request.method === "POST" && path === "/api/v1/ip/allocate") return allocate(request);
  if (request.method === "DELETE" && path.startsWith(RELEASE))
    return release(decodeURIComponent(path.slice(RELEASE.length)));
  if (path === "/api/v1/health") return new Response(HEALTH, { headers: { "content-type": "application/json" } });
  return new Response("not found", { status: 404 });
}

if (values.socket !== undefined) {
  Bun.serve({ unix: values.socket, fetch });
  process.stdout.write(`FLOOR ready socket=${values.socket}\n`);
} else {
  const server = Bun.serve({ hostname: "127.0.0.1", port: Number(values.port), reusePort: false, fetch });
  process.stdout.write(`FLOOR ready port=${server.port}\n`);
}
