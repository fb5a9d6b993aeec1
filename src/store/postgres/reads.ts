/**
 * What a step may ask the shared store for, and how each is fetched. A step runs synchronously
 * over what has been fetched so far (view.ts); when it reads something not fetched yet, the view
 * throws `Missing` with one of these reads, the store fetches it and runs the step again.
 *
 * In a write step, the rows a step may go on to change are read `FOR UPDATE`: they stay as read
 * until the transaction ends, as LMDB's single writer guarantees. Rows that do not exist cannot be
 * locked; a competing insert of them fails on the schema's constraints, and the step is run again
 * in a new transaction (store.ts).
 */
import type { Sql, TransactionSql } from "postgres";
import type { Nic } from "../../dhcp/link.ts";
import type { EipRecord, EipState, IdempotencyRecord } from "../../eip/store.ts";
import type { AllocationRecord, PoolStamp } from "../../pool/store.ts";
import type { Writable } from "../../writable.ts";
import type { PageClaims } from "./pages.ts";

export type Read =
  | { readonly kind: "pools" }
  | { readonly kind: "counts"; readonly pool: string }
  | { readonly kind: "fullPages"; readonly pool: string }
  | { readonly kind: "page"; readonly pool: string; readonly index: number }
  | { readonly kind: "pageIndexes"; readonly pool: string }
  | { readonly kind: "allocation"; readonly pool: string; readonly vmId: string }
  | { readonly kind: "allocations"; readonly pool: string }
  | { readonly kind: "address"; readonly pool: string; readonly ip: number }
  | {
      readonly kind: "addresses";
      readonly pool: string;
      readonly from: number;
      readonly to: number;
      readonly limit: number | undefined;
    }
  | { readonly kind: "name"; readonly pool: string; readonly name: string }
  | { readonly kind: "names"; readonly pool: string }
  | { readonly kind: "eip"; readonly id: string }
  | { readonly kind: "eipsOfProject"; readonly project: string }
  | { readonly kind: "allEips" }
  | { readonly kind: "eipCount"; readonly pool: string; readonly project: string; readonly state: EipState }
  | { readonly kind: "instance"; readonly instanceId: string }
  | { readonly kind: "idempotency"; readonly project: string; readonly key: string }
  /** Every allocation and name of a pool, instead of one point read after another (store.ts). */
  | { readonly kind: "poolRows"; readonly pool: string }
  /** Every page of a pool, likewise. */
  | { readonly kind: "poolPages"; readonly pool: string }
  /**
   * Not a read: a page of the pool claimed for this daemon to take new addresses from (pages.ts),
   * asked for when it holds none with a free address, once per holding (`generation`).
   */
  | { readonly kind: "claim"; readonly pool: string; readonly generation: number }
  /** Whether this daemon holds a job's lease at an epoch (store/steps.ts); a write step keeps it so. */
  | { readonly kind: "job"; readonly job: string; readonly epoch: number };

/**
 * A read the view needs before the step can go on. Steps never catch it (store/steps.ts). Not an
 * Error: it is thrown several times for every step and never reaches a log, and capturing a stack
 * each time was a measurable share of a fleet daemon's CPU.
 */
export class Missing {
  constructor(
    readonly key: string,
    readonly read: Read,
  ) {}
}

/** The key a read's answer is kept under; point reads share theirs with the writes that change them. */
export function keyOf(read: Read): string {
  switch (read.kind) {
    case "pools":
    case "allEips":
      return read.kind;
    case "counts":
    case "fullPages":
    case "pageIndexes":
    case "allocations":
    case "names":
    case "poolRows":
    case "poolPages":
      return `${read.kind}\0${read.pool}`;
    case "page":
      return pageKey(read.pool, read.index);
    case "allocation":
      return allocationKey(read.pool, read.vmId);
    case "address":
      return addressKey(read.pool, read.ip);
    case "addresses":
      return `addresses\0${read.pool}\0${read.from}\0${read.to}\0${read.limit ?? ""}`;
    case "name":
      return nameKey(read.pool, read.name);
    case "eip":
      return eipKey(read.id);
    case "eipsOfProject":
      return `eipsOfProject\0${read.project}`;
    case "eipCount":
      return `eipCount\0${read.pool}\0${read.project}\0${read.state}`;
    case "instance":
      return instanceKey(read.instanceId);
    case "idempotency":
      return idempotencyKey(read.project, read.key);
    case "claim":
      return `claim\0${read.pool}\0${read.generation}`;
    case "job":
      return `job\0${read.job}\0${read.epoch}`;
  }
}

export const pageKey = (pool: string, index: number) => `page\0${pool}\0${index}`;

/** The pool and index a page's key names; undefined for any other key. */
export function pageOfKey(key: string): { pool: string; index: number } | undefined {
  if (!key.startsWith("page\0")) return undefined;
  const cut = key.lastIndexOf("\0");
  return { pool: key.slice("page\0".length, cut), index: Number(key.slice(cut + 1)) };
}
export const allocationKey = (pool: string, vmId: string) => `allocation\0${pool}\0${vmId}`;
export const addressKey = (pool: string, ip: number) => `address\0${pool}\0${ip}`;
export const nameKey = (pool: string, name: string) => `name\0${pool}\0${name}`;
export const eipKey = (id: string) => `eip\0${id}`;
export const instanceKey = (instanceId: string) => `instance\0${instanceId}`;
export const idempotencyKey = (project: string, key: string) => `idempotency\0${project}\0${key}`;
/**
 * The read that answers every point read of one kind at once: a pool's allocations, addresses and
 * names come with `poolRows`, its pages with `poolPages`, every EIP, instance and idempotency key
 * with `allEips`. Once it is fetched, a point read it did not answer is of a row that does not exist.
 */
export function wholeRead(read: Read): Read | undefined {
  switch (read.kind) {
    case "allocation":
    case "address":
    case "name":
      return { kind: "poolRows", pool: read.pool };
    case "page":
      return { kind: "poolPages", pool: read.pool };
    case "eip":
    case "instance":
    case "idempotency":
      return { kind: "allEips" };
    default:
      return undefined;
  }
}

/** A bitmap page as stored: its allocation bits and whether the summary counts it as full. */
export interface StoredPage {
  readonly bits: Uint32Array;
  readonly full: boolean;
  /**
   * The version of the row these bits and flag were read from (schema.ts, v7); none once a step
   * has written them, since they are then a state the database gives a version of its own.
   */
  readonly version?: number;
}

export interface StoredCounts {
  readonly allocated: number;
  /** This daemon's next-fit cursor in the pool. */
  readonly cursor: number;
}

type Db = Sql | TransactionSql;

/**
 * Where fetched answers go: the read's own key, and point keys a range read answered on the way.
 * It also knows which of them are range answers (a write makes them stale) and which pages of a
 * pool it has (their `full` flags are fresher than the list of full pages), without a scan.
 */
export class Answers extends Map<string, unknown> {
  readonly ranges = new Set<string>();
  private readonly pages = new Map<string, Set<number>>();

  override set(key: string, value: unknown): this {
    const page = pageOfKey(key);
    if (page) {
      const known = this.pages.get(page.pool) ?? new Set<number>();
      known.add(page.index);
      this.pages.set(page.pool, known);
    } else if (isRangeKey(key)) this.ranges.add(key);
    return super.set(key, value);
  }

  override delete(key: string): boolean {
    this.ranges.delete(key);
    return super.delete(key);
  }

  override clear(): void {
    this.ranges.clear();
    this.pages.clear();
    super.clear();
  }

  /** The pages of `pool` with an answer. */
  pagesOf(pool: string): Iterable<number> {
    return this.pages.get(pool) ?? [];
  }

  /** The pools with a page that has an answer. */
  poolsWithPages(): Iterable<string> {
    return this.pages.keys();
  }
}

/** Answers of range reads, which a write may have changed. */
const RANGE_KEY = /^(allEips$|allocations\0|names\0|addresses\0|eipsOfProject\0|eipCount\0)/;

function isRangeKey(key: string): boolean {
  return RANGE_KEY.test(key);
}

/** Who is reading: the daemon (its cursor is its own) and the pages it holds. */
export interface Reader {
  readonly daemon: string;
  readonly pages: PageClaims;
}

/**
 * Fetches one read into `answers`. `locking` (write steps) reads the rows a step may change
 * `FOR UPDATE`. Range reads also answer the point reads of the rows they return, only when not
 * locking: a write step must not decide on a row it has not locked.
 */
export async function fetchRead(db: Db, read: Read, answers: Answers, reader: Reader, locking: boolean): Promise<void> {
  const lock = locking ? db`FOR UPDATE` : db``;
  const key = keyOf(read);
  const { daemon } = reader;
  switch (read.kind) {
    case "claim": {
      await reader.pages.claim(read.pool);
      answers.set(key, true);
      return;
    }
    case "job": {
      // FOR SHARE in a write step: the lease cannot pass to another daemon until this step commits.
      const rows = await db`
        SELECT 1 FROM job_leases
        WHERE job = ${read.job} AND holder = ${daemon} AND epoch = ${read.epoch} AND expires_at > now()
        ${locking ? db`FOR SHARE` : db``}`;
      answers.set(key, rows.length > 0);
      return;
    }
    case "pools": {
      const rows = await db<{ name: string; cidr: string; fingerprint: string }[]>`
        SELECT name, cidr, fingerprint FROM pools ORDER BY name`;
      answers.set(
        key,
        new Map<string, PoolStamp>(rows.map((r) => [r.name, { cidr: r.cidr, fingerprint: r.fingerprint }])),
      );
      return;
    }
    case "counts": {
      const [row] = await db<{ allocated: number; cursor: number }[]>`
        SELECT coalesce(sum(allocated), 0)::float8 AS allocated,
               coalesce(max(cursor) FILTER (WHERE daemon = ${daemon}), 0)::float8 AS cursor
        FROM pool_counts WHERE pool = ${read.pool}`;
      answers.set(key, { allocated: row?.allocated ?? 0, cursor: row?.cursor ?? 0 } satisfies StoredCounts);
      return;
    }
    case "fullPages": {
      const rows = await db<{ page: number }[]>`SELECT page FROM pool_pages WHERE pool = ${read.pool} AND filled`;
      answers.set(key, new Set(rows.map((r) => r.page)));
      return;
    }
    case "page": {
      const [row] = await db<PageRow[]>`
        SELECT bits, filled, version FROM pool_pages WHERE pool = ${read.pool} AND page = ${read.index} ${lock}`;
      answers.set(key, row && storedPage(row));
      return;
    }
    case "pageIndexes": {
      const rows = await db<{ page: number }[]>`SELECT page FROM pool_pages WHERE pool = ${read.pool} ORDER BY page`;
      answers.set(
        key,
        rows.map((r) => r.page),
      );
      return;
    }
    case "allocation": {
      const [row] = await db<AllocationRow[]>`
        SELECT ${allocationColumns(db)} FROM allocations WHERE pool = ${read.pool} AND vm_id = ${read.vmId} ${lock}`;
      answers.set(key, row && allocationOf(row));
      return;
    }
    case "allocations": {
      const rows = await db<AllocationRow[]>`
        SELECT ${allocationColumns(db)} FROM allocations WHERE pool = ${read.pool} ORDER BY vm_id`;
      answers.set(
        key,
        rows.map((row) => ({ vmId: row.vm_id, record: allocationOf(row) })),
      );
      if (!locking) for (const row of rows) answers.set(allocationKey(read.pool, row.vm_id), allocationOf(row));
      return;
    }
    case "address": {
      const [row] = await db<{ vm_id: string }[]>`
        SELECT vm_id FROM allocations WHERE pool = ${read.pool} AND ip = ${read.ip}`;
      answers.set(key, row?.vm_id);
      return;
    }
    case "addresses": {
      const rows = await db<AllocationRow[]>`
        SELECT ${allocationColumns(db)} FROM allocations
        WHERE pool = ${read.pool} AND ip BETWEEN ${read.from} AND ${read.to}
        ORDER BY ip ${read.limit === undefined ? db`` : db`LIMIT ${read.limit}`}`;
      answers.set(
        key,
        rows.map((row) => ({ ip: row.ip, vmId: row.vm_id })),
      );
      if (!locking) for (const row of rows) answers.set(allocationKey(read.pool, row.vm_id), allocationOf(row));
      return;
    }
    case "name": {
      const [row] = await db<{ vm_id: string }[]>`
        SELECT vm_id FROM vm_names WHERE pool = ${read.pool} AND name = ${read.name} ${lock}`;
      answers.set(key, row?.vm_id);
      return;
    }
    case "names": {
      const rows = await db<{ name: string; vm_id: string }[]>`
        SELECT name, vm_id FROM vm_names WHERE pool = ${read.pool} ORDER BY name`;
      answers.set(
        key,
        rows.map((r) => ({ name: r.name, vmId: r.vm_id })),
      );
      return;
    }
    case "eip": {
      const [row] = await db<EipRow[]>`SELECT ${eipColumns(db)} FROM eips WHERE id = ${read.id} ${lock}`;
      answers.set(key, row && eipOf(row));
      return;
    }
    case "eipsOfProject": {
      // A write step counts a project's EIPs to keep its quota: no row lock covers rows yet to be
      // inserted, so it holds the project's lock until its transaction ends, and a rival daemon's
      // allocation for the same project waits and counts again.
      if (locking) await db`SELECT pg_advisory_xact_lock(hashtextextended(${`eips of ${read.project}`}, 0))`;
      const rows = await db<EipRow[]>`SELECT ${eipColumns(db)} FROM eips WHERE project = ${read.project} ORDER BY id`;
      answers.set(
        key,
        rows.map((row) => row.id),
      );
      if (!locking) for (const row of rows) answers.set(eipKey(row.id), eipOf(row));
      return;
    }
    case "allEips": {
      const rows = await db<EipRow[]>`SELECT ${eipColumns(db)} FROM eips ORDER BY id ${lock}`;
      const keys = await db<{ project: string; key: string; eip_id: string; pool: string }[]>`
        SELECT project, key, eip_id, pool FROM eip_idempotency ${lock}`;
      answers.set(key, rows.map(eipOf));
      for (const row of rows) {
        answers.set(eipKey(row.id), eipOf(row));
        if (row.instance_id !== null) answers.set(instanceKey(row.instance_id), row.id);
      }
      for (const row of keys) answers.set(idempotencyKey(row.project, row.key), { id: row.eip_id, pool: row.pool });
      return;
    }
    case "eipCount": {
      const [row] = await db<{ count: number }[]>`
        SELECT count(*)::float8 AS count FROM eips
        WHERE pool = ${read.pool} AND project = ${read.project} AND state = ${read.state}`;
      answers.set(key, row?.count ?? 0);
      return;
    }
    case "instance": {
      const [row] = await db<{ id: string }[]>`SELECT id FROM eips WHERE instance_id = ${read.instanceId}`;
      answers.set(key, row?.id);
      return;
    }
    case "poolRows": {
      const rows = await db<AllocationRow[]>`
        SELECT ${allocationColumns(db)} FROM allocations WHERE pool = ${read.pool} ${lock}`;
      for (const row of rows) {
        answers.set(allocationKey(read.pool, row.vm_id), allocationOf(row));
        answers.set(addressKey(read.pool, row.ip), row.vm_id);
      }
      const names = await db<{ name: string; vm_id: string }[]>`
        SELECT name, vm_id FROM vm_names WHERE pool = ${read.pool} ${lock}`;
      for (const { name, vm_id } of names) answers.set(nameKey(read.pool, name), vm_id);
      answers.set(key, true);
      return;
    }
    case "poolPages": {
      const rows = await db<(PageRow & { page: number })[]>`
        SELECT page, bits, filled, version FROM pool_pages WHERE pool = ${read.pool} ${lock}`;
      for (const row of rows) answers.set(pageKey(read.pool, row.page), storedPage(row));
      answers.set(key, true);
      return;
    }
    case "idempotency": {
      const [row] = await db<{ eip_id: string; pool: string }[]>`
        SELECT eip_id, pool FROM eip_idempotency WHERE project = ${read.project} AND key = ${read.key} ${lock}`;
      answers.set(key, row && ({ id: row.eip_id, pool: row.pool } satisfies IdempotencyRecord));
      return;
    }
  }
}

interface PageRow {
  readonly bits: Buffer;
  readonly filled: boolean;
  readonly version: number;
}

function storedPage(row: PageRow): StoredPage {
  return { bits: wordsOf(row.bits), full: row.filled, version: row.version };
}

/** A page's 512 bytes as words (copied: the driver's buffer is not ours to keep). */
function wordsOf(bytes: Buffer): Uint32Array {
  const words = new Uint32Array(new ArrayBuffer(bytes.length));
  new Uint8Array(words.buffer).set(bytes);
  return words;
}

interface AllocationRow {
  readonly vm_id: string;
  readonly ip: number;
  readonly hostname: string | null;
  readonly name: string | null;
  readonly host: string | null;
  readonly nic: Nic | null;
  readonly created_ms: number;
}

/**
 * The allocations of `pool` recorded on `host`, in vm_id order, through the index on (pool, host):
 * what a fleet daemon delivers as its host's DHCP reservations, without reading the rest of a pool
 * every host shares.
 */
export async function fetchAllocationsOnHost(
  db: Db,
  pool: string,
  host: string,
): Promise<{ vmId: string; record: AllocationRecord }[]> {
  const rows = await db<AllocationRow[]>`
    SELECT ${allocationColumns(db)} FROM allocations WHERE pool = ${pool} AND host = ${host} ORDER BY vm_id`;
  return rows.map((row) => ({ vmId: row.vm_id, record: allocationOf(row) }));
}

/**
 * The rows of the VMs `vmIds` of `pool`, as point reads answer them (absent: undefined), in one
 * query: what a one-statement commit refused for a VM that has its address is planned again over.
 */
export async function fetchAllocationsOf(
  db: Db,
  pool: string,
  vmIds: readonly string[],
): Promise<Map<string, AllocationRecord | undefined>> {
  const rows = await db<AllocationRow[]>`
    SELECT ${allocationColumns(db)} FROM allocations WHERE pool = ${pool} AND vm_id = ANY(${db.array([...vmIds])}::text[])`;
  const found = new Map<string, AllocationRecord | undefined>(
    vmIds.map((vmId) => [allocationKey(pool, vmId), undefined]),
  );
  for (const row of rows) found.set(allocationKey(pool, row.vm_id), allocationOf(row));
  return found;
}

/** Times are kept as timestamptz and read back as the milliseconds they were written from. */
function allocationColumns(db: Db) {
  return db`vm_id, ip::float8 AS ip, hostname, name, host, nic,
            round(extract(epoch FROM created_at) * 1000)::float8 AS created_ms`;
}

function allocationOf(row: AllocationRow): AllocationRecord {
  const record: Writable<AllocationRecord> = { ip: row.ip, createdAt: row.created_ms };
  if (row.hostname !== null) record.hostname = row.hostname;
  if (row.name !== null) record.name = row.name;
  if (row.host !== null) record.host = row.host;
  if (row.nic !== null) record.nic = row.nic;
  return record;
}

interface EipRow {
  readonly id: string;
  readonly project: string;
  readonly pool: string;
  readonly public_ip: number;
  readonly state: EipState;
  readonly created_ms: number;
  readonly idempotency_key: string | null;
  readonly instance_id: string | null;
  readonly host: string | null;
  readonly private_ip: number | null;
  readonly associated_ms: number | null;
}

function eipColumns(db: Db) {
  return db`id, project, pool, public_ip::float8 AS public_ip, state,
            round(extract(epoch FROM created_at) * 1000)::float8 AS created_ms,
            idempotency_key, instance_id, host, private_ip::float8 AS private_ip,
            round(extract(epoch FROM associated_at) * 1000)::float8 AS associated_ms`;
}

function eipOf(row: EipRow): EipRecord {
  const record: Writable<EipRecord> = {
    id: row.id,
    project: row.project,
    pool: row.pool,
    publicIp: row.public_ip,
    state: row.state,
    createdAt: row.created_ms,
  };
  if (row.idempotency_key !== null) record.idempotencyKey = row.idempotency_key;
  if (row.instance_id !== null) record.instanceId = row.instance_id;
  if (row.host !== null) record.host = row.host;
  if (row.private_ip !== null) record.privateIp = row.private_ip;
  if (row.associated_ms !== null) record.associatedAt = row.associated_ms;
  return record;
}
