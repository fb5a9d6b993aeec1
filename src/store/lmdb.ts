/**
 * The LMDB-backed store: one environment under the data directory with a sub-database per
 * kind of record. Writes from concurrent requests queued in the same event turn share one
 * transaction and one flush (lmdb-js batches them), which is the daemon's group commit.
 */
import { mkdirSync, statfsSync } from "node:fs";
import { join } from "node:path";
import { type Database, open, type RootDatabase } from "lmdb";
import type { EipIndexReader } from "../eip/fsck.ts";
import type { EipRecord, EipState, EipStore, IdempotencyRecord } from "../eip/store.ts";
import { pageFromBytes, pageToBytes } from "../pool/bitmap.ts";
import type { AllocationRecord, PoolCounters, PoolStamp, PoolStore } from "../pool/store.ts";
import { StorageFullError, StoreOpenError } from "./errors.ts";
import { PoolCache } from "./pool-cache.ts";
import type { StepStore, StoreView } from "./steps.ts";

type PageKey = [string, number];
type AllocationKey = [string, string];
type AddressKey = [string, number];
/** `[pool, project, state, id]`: one key per EIP, so counting a range counts EIPs in that state. */
type EipStateKey = [string, string, string, string];

/**
 * Below this much free space, a failed commit is the file system being full: LMDB reports a short
 * write as EIO, not ENOSPC, so the free space is what tells. The store counts as full until a
 * commit succeeds with at least this much free again (a small commit may still fit meanwhile).
 */
const LOW_SPACE_BYTES = 2 ** 20;
const ENOSPC = 28;
const COMMIT_ERROR_WAIT_MS = 1000;
const EDQUOT = 122;

/** Writes refused because the file system was full, and other failed commits, since the start. */
export interface WriteFailures {
  readonly storageFull: number;
  readonly other: number;
}

/** The LMDB file in the data directory; LMDB keeps its lock file beside it as `ippool.mdb-lock`. */
export const STORE_FILE = "ippool.mdb";

/** EIP ids and project names are printable ASCII, so `[name, AFTER_VM_IDS]` sorts after every key of `name`. */
const AFTER_VM_IDS = "\uffff";

export class LmdbStore implements StepStore, PoolStore, EipStore, EipIndexReader {
  private readonly root: RootDatabase;
  private readonly stamps: Database<PoolStamp, string>;
  private readonly counters: Database<Buffer, string>;
  private readonly summaries: Database<Buffer, string>;
  private readonly pages: Database<Buffer, PageKey>;
  private readonly allocations: Database<AllocationRecord, AllocationKey>;
  private readonly addressIndex: Database<string, AddressKey>;
  private readonly nameIndex: Database<string, [string, string]>;
  private readonly eips: Database<EipRecord, string>;
  private readonly eipsByProject: Database<string, [string, string]>;
  private readonly idempotency: Database<IdempotencyRecord, [string, string]>;
  private readonly eipByInstance: Database<string, string>;
  private readonly eipStates: Database<string, EipStateKey>;
  /**
   * The store's own facts: its identity (`store-id`, see integrity.ts). Undefined when a store made
   * before it existed is opened read-only (LMDB cannot add a sub-database then).
   */
  private readonly meta: Database<string, string> | undefined;
  /** Bitmap pages and summaries, written through (pool-cache.ts). */
  private readonly cache = new PoolCache();
  private readonly counterBytes = Buffer.alloc(12);
  /** True while a write transaction's callback runs: only then do counters read check the cache. */
  private writing = false;
  /** True from a commit refused for lack of space until one succeeds with room to spare again. */
  private full = false;
  private failures: WriteFailures = { storageFull: 0, other: 0 };

  /**
   * Opens (creating, unless `readOnly`) the store in `dataDir`. Read-only, nothing is created and
   * the store file is only read: see `read-only.ts` for where its LMDB lock file is.
   */
  constructor(
    private readonly dataDir: string,
    { readOnly = false }: { readonly readOnly?: boolean } = {},
  ) {
    try {
      if (!readOnly) mkdirSync(dataDir, { recursive: true, mode: 0o750 });
      // overlappingSync off: a commit resolves once it is on disk and published to other
      // processes' readers. With it on, lmdb-js resolves a commit before its flush and publishes
      // it to other processes later: a backup taken right after an acknowledged write missed it.
      this.root = open({
        path: join(dataDir, STORE_FILE),
        maxDbs: 16,
        mapSize: 2 ** 30,
        overlappingSync: false,
        readOnly,
      });
    } catch (error) {
      throw new StoreOpenError(`cannot open data directory ${dataDir}: ${(error as Error).message}`);
    }
    this.stamps = this.root.openDB({ name: "pool-stamp" });
    this.counters = this.root.openDB({ name: "pool-counters", encoding: "binary" });
    this.summaries = this.root.openDB({ name: "pool-summary", encoding: "binary" });
    this.pages = this.root.openDB({ name: "pool-pages", encoding: "binary" });
    this.allocations = this.root.openDB({ name: "allocations" });
    this.addressIndex = this.root.openDB({ name: "addresses", encoding: "string" });
    this.nameIndex = this.root.openDB({ name: "vm-names", encoding: "string" });
    this.eips = this.root.openDB({ name: "eips" });
    this.eipsByProject = this.root.openDB({ name: "eips-by-project", encoding: "string" });
    this.idempotency = this.root.openDB({ name: "eip-idempotency" });
    this.eipByInstance = this.root.openDB({ name: "eip-by-instance", encoding: "string" });
    this.eipStates = this.root.openDB({ name: "eip-states", encoding: "string" });
    this.meta = this.root.openDB({ name: "meta", encoding: "string" });
  }

  /** The identity this store was given when it was made (absent in stores made before it was kept). */
  storeId(): string | undefined {
    return this.meta?.get("store-id");
  }

  async putStoreId(id: string): Promise<void> {
    await this.write(() => this.meta?.putSync("store-id", id));
  }

  /** The sub-databases the store file lists (its main database's keys) that this version opens. */
  listedDatabases(): string[] {
    const known = new Set(Object.keys(this.databases()));
    return [...this.root.getKeys()].map(String).filter((name) => known.has(name));
  }

  /**
   * The number of entries of every sub-database this store opened, counted by LMDB's cursor in
   * native code: a walk over every branch and leaf page, which is what a damaged page trips over.
   */
  entryCounts(): Record<string, number> {
    // Read-only, a sub-database a store never had is undefined: there is nothing of it to walk.
    return Object.fromEntries(
      Object.entries(this.databases()).flatMap(([name, db]) => (db === undefined ? [] : [[name, db.getKeysCount()]])),
    );
  }

  /** Every sub-database by its name in the file; undefined where a read-only open did not find it. */
  private databases(): Record<string, { getKeysCount(): number } | undefined> {
    return {
      "pool-stamp": this.stamps,
      "pool-counters": this.counters,
      "pool-summary": this.summaries,
      "pool-pages": this.pages,
      allocations: this.allocations,
      addresses: this.addressIndex,
      "vm-names": this.nameIndex,
      eips: this.eips,
      "eips-by-project": this.eipsByProject,
      "eip-idempotency": this.idempotency,
      "eip-by-instance": this.eipByInstance,
      "eip-states": this.eipStates,
      meta: this.meta,
    };
  }

  /** A read step runs at once, over the latest committed state: LMDB reads need no transaction of their own. */
  async read<T>(step: (view: StoreView) => T): Promise<T> {
    return step(this);
  }

  /**
   * Runs `body` in a write transaction and resolves once it is committed and on disk. A commit the
   * file system has no room for is a `StorageFullError` (nothing of it is kept); writing resumes
   * by itself with the first commit that fits.
   */
  async write<T>(body: (view: StoreView) => T): Promise<T> {
    let result: T;
    try {
      // Without overlapping sync (see the constructor) a commit resolves once LMDB's commit, its
      // fdatasync included, has returned: on disk, and visible to readers in other processes.
      result = await (this.root.transaction(() => this.writingIn(body)) as Promise<T>);
    } catch (error) {
      this.cache.clear();
      throw await this.commitFailure(error);
    }
    if (this.full && freeBytes(this.dataDir) >= LOW_SPACE_BYTES) this.full = false;
    return result;
  }

  /** Whether the last commit was refused for lack of space, and the refused commits so far. */
  writeHealth(): { full: boolean; failures: WriteFailures } {
    return { full: this.full, failures: this.failures };
  }

  /**
   * What a failed commit was. lmdb-js rejects each write of the batch with "Commit failed" and
   * LMDB's own error in `commitError`, a promise rejected a moment later: it is awaited (and so
   * handled: left alone, its rejection would end the process).
   */
  private async commitFailure(error: unknown): Promise<Error> {
    let cause = error as Error & { code?: number };
    const commitError = (error as { commitError?: Promise<unknown> }).commitError;
    if (commitError) {
      const settled = commitError.then(
        () => cause,
        (reason: Error & { code?: number }) => reason,
      );
      // It is rejected right after the writes are; should it not be, the free space still tells.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<typeof cause>((resolve) => {
        timer = setTimeout(() => resolve(cause), COMMIT_ERROR_WAIT_MS);
      });
      cause = await Promise.race([settled, late]);
      clearTimeout(timer);
    }
    const free = freeBytes(this.dataDir);
    if (cause.code === ENOSPC || cause.code === EDQUOT || free < LOW_SPACE_BYTES) {
      this.full = true;
      this.failures = { ...this.failures, storageFull: this.failures.storageFull + 1 };
      return new StorageFullError(
        `the data directory's file system is full (${free} bytes free): the change was not made; free space and it is taken again at once`,
      );
    }
    this.failures = { ...this.failures, other: this.failures.other + 1 };
    return cause;
  }

  /** Runs `body` in one write transaction synchronously (tests that write behind the services' back). */
  writeSync<T>(body: (view: StoreView) => T): T {
    try {
      return this.root.transactionSync(() => this.writingIn(body));
    } catch (error) {
      this.cache.clear();
      throw error;
    }
  }

  private writingIn<T>(body: (view: StoreView) => T): T {
    this.writing = true;
    try {
      return body(this);
    } finally {
      this.writing = false;
    }
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  /**
   * Writes a consistent copy of the whole store to `path` (a new file): LMDB copies one read
   * transaction's snapshot, so writers go on meanwhile and every change committed before the call
   * is in it. Compacted: free pages are left out.
   */
  async backup(path: string): Promise<void> {
    await this.root.backup(path, true);
  }

  /** The memory map's size and the bytes in use up to the last page written (for metrics; a few µs). */
  sizes(): { mapSizeBytes: number; usedBytes: number } {
    const stats = this.root.getStats() as { mapSize: number; pageSize: number; lastPageNumber: number };
    return { mapSizeBytes: stats.mapSize, usedBytes: (stats.lastPageNumber + 1) * stats.pageSize };
  }

  poolNames(): string[] {
    return [...this.stamps.getKeys()];
  }

  getStamp(pool: string): PoolStamp | undefined {
    return this.stamps.get(pool);
  }

  putStamp(pool: string, stamp: PoolStamp): void {
    this.stamps.putSync(pool, stamp);
  }

  /**
   * Cursor and count are 8 bytes; the pool's write generation (pool-cache.ts) follows them, absent
   * in stores written before it was kept (generation 0). Read inside a write transaction, the
   * committed generation decides whether the cached pages still hold.
   */
  getCounters(pool: string): PoolCounters | undefined {
    const bytes = this.counters.getBinaryFast(pool);
    if (!bytes) return undefined;
    if (this.writing) this.cache.checked(pool, bytes.length >= 12 ? bytes.readUInt32LE(8) : 0);
    return { cursor: bytes.readUInt32LE(0), allocated: bytes.readUInt32LE(4) };
  }

  putCounters(pool: string, counters: PoolCounters): void {
    // One buffer for every write: putSync copies it before it returns.
    const bytes = this.counterBytes;
    bytes.writeUInt32LE(counters.cursor, 0);
    bytes.writeUInt32LE(counters.allocated, 4);
    bytes.writeUInt32LE(this.cache.of(pool).nextGeneration(), 8);
    this.counters.putSync(pool, bytes);
  }

  removePool(pool: string): void {
    this.stamps.removeSync(pool);
    this.counters.removeSync(pool);
    this.summaries.removeSync(pool);
    for (const index of this.pageIndexes(pool)) this.pages.removeSync([pool, index]);
    this.cache.forget(pool);
  }

  /**
   * Pages and summaries are the cache's own arrays: change one only to put it back in the same
   * transaction. (getBinaryFast returns a buffer that the next read overwrites; pageFromBytes
   * copies it out.)
   */
  getSummary(pool: string): Uint32Array | undefined {
    const cached = this.cache.of(pool);
    if (cached.summary === undefined) {
      const bytes = this.summaries.getBinaryFast(pool);
      if (bytes) cached.summary = pageFromBytes(bytes, bytes.length / 4);
    }
    return cached.summary;
  }

  /** One daemon writes this store: it holds every job's lease, always at the same epoch. */
  acquireJob(): Promise<number> {
    return Promise.resolve(1);
  }

  holdsJob(): boolean {
    return true;
  }

  /** One daemon writes this store: every page with a free address will do. */
  pagesToAllocateFrom(pool: string): Uint32Array | undefined {
    return this.getSummary(pool);
  }

  putSummary(pool: string, words: Uint32Array): void {
    this.summaries.putSync(pool, pageToBytes(words));
    this.cache.of(pool).summary = words;
  }

  getPage(pool: string, index: number): Uint32Array | undefined {
    const { pages } = this.cache.of(pool);
    const cached = pages.get(index);
    if (cached !== undefined) return cached;
    const bytes = this.pages.getBinaryFast([pool, index]);
    if (!bytes) return undefined;
    const page = pageFromBytes(bytes);
    pages.set(index, page);
    return page;
  }

  // lmdb-js copies the value within putSync inside a transaction: the page may change afterwards.
  putPage(pool: string, index: number, words: Uint32Array): void {
    this.pages.putSync([pool, index], pageToBytes(words));
    this.cache.of(pool).pages.set(index, words);
  }

  removePage(pool: string, index: number): void {
    this.pages.removeSync([pool, index]);
    this.cache.of(pool).pages.delete(index);
  }

  pageIndexes(pool: string): Iterable<number> {
    return this.pages.getKeys({ start: [pool, 0], end: [pool, 2 ** 32] }).map((key) => key[1]);
  }

  getAllocation(pool: string, vmId: string): AllocationRecord | undefined {
    return this.allocations.get([pool, vmId]);
  }

  putAllocation(pool: string, vmId: string, record: AllocationRecord): void {
    this.allocations.putSync([pool, vmId], record);
  }

  removeAllocation(pool: string, vmId: string): void {
    this.allocations.removeSync([pool, vmId]);
  }

  *allocationEntries(pool: string): Iterable<{ vmId: string; record: AllocationRecord }> {
    for (const { key, value } of keysOfPool(this.allocations, pool)) yield { vmId: key[1], record: value };
  }

  vmNamed(pool: string, name: string): string | undefined {
    return this.nameIndex.get([pool, name]);
  }

  putName(pool: string, name: string, vmId: string): void {
    this.nameIndex.putSync([pool, name], vmId);
  }

  removeName(pool: string, name: string): void {
    this.nameIndex.removeSync([pool, name]);
  }

  *vmNames(pool: string): Iterable<{ name: string; vmId: string }> {
    for (const { key, value } of keysOfPool(this.nameIndex, pool)) yield { name: key[1], vmId: value };
  }

  vmAt(pool: string, ip: number): string | undefined {
    return this.addressIndex.get([pool, ip]);
  }

  putAddress(pool: string, ip: number, vmId: string): void {
    this.addressIndex.putSync([pool, ip], vmId);
  }

  removeAddress(pool: string, ip: number): void {
    this.addressIndex.removeSync([pool, ip]);
  }

  addresses(pool: string, fromIp: number, toIp: number, limit?: number): Iterable<{ ip: number; vmId: string }> {
    return this.addressIndex
      .getRange({ start: [pool, fromIp], end: [pool, toIp + 1], ...(limit === undefined ? {} : { limit }) })
      .map(({ key, value }) => ({ ip: key[1], vmId: value }));
  }

  getEip(id: string): EipRecord | undefined {
    return this.eips.get(id);
  }

  putEip(record: EipRecord): void {
    const prior = this.eips.get(record.id);
    if (prior) this.eipStates.removeSync(stateKey(prior));
    this.eips.putSync(record.id, record);
    this.eipsByProject.putSync([record.project, record.id], "");
    this.eipStates.putSync(stateKey(record), "");
  }

  removeEip(record: EipRecord): void {
    this.eips.removeSync(record.id);
    this.eipsByProject.removeSync([record.project, record.id]);
    this.eipStates.removeSync(stateKey(record));
  }

  countEips(pool: string, project: string, state: EipState): number {
    return this.eipStates.getKeysCount({
      start: [pool, project, state, ""],
      end: [pool, project, state, AFTER_VM_IDS],
    });
  }

  /**
   * Rebuilds the EIP state index when it does not hold one key per EIP record (a store written
   * before the index existed). Returns the number of records indexed, 0 when nothing was needed.
   * Two native key counts when the index is complete; a scan of the records only when it is not.
   */
  ensureEipStateIndex(): number {
    if (this.eipStates.getKeysCount() === this.eips.getKeysCount()) return 0;
    return this.root.transactionSync(() => {
      this.eipStates.clearSync();
      let indexed = 0;
      for (const { value } of this.eips.getRange()) {
        this.eipStates.putSync(stateKey(value), "");
        indexed++;
      }
      return indexed;
    });
  }

  eipIdsOfProject(project: string): Iterable<string> {
    return this.eipsByProject.getKeys(projectRange(project)).map((key) => key[1]);
  }

  countEipsOfProject(project: string): number {
    return this.eipsByProject.getKeysCount(projectRange(project));
  }

  allEips(): Iterable<EipRecord> {
    return this.eips.getRange().map(({ value }) => value);
  }

  eipOfInstance(instanceId: string): string | undefined {
    return this.eipByInstance.get(instanceId);
  }

  putInstanceEip(instanceId: string, id: string): void {
    this.eipByInstance.putSync(instanceId, id);
  }

  removeInstanceEip(instanceId: string): void {
    this.eipByInstance.removeSync(instanceId);
  }

  getIdempotency(project: string, key: string): IdempotencyRecord | undefined {
    return this.idempotency.get([project, key]);
  }

  putIdempotency(project: string, key: string, record: IdempotencyRecord): void {
    this.idempotency.putSync([project, key], record);
  }

  removeIdempotency(project: string, key: string): void {
    this.idempotency.removeSync([project, key]);
  }

  projectIndex(): Iterable<{ project: string; id: string }> {
    return this.eipsByProject.getKeys().map(([project, id]) => ({ project, id }));
  }

  stateIndex(): Iterable<{ pool: string; project: string; state: string; id: string }> {
    return this.eipStates.getKeys().map(([pool, project, state, id]) => ({ pool, project, state, id }));
  }

  instanceIndex(): Iterable<{ instanceId: string; id: string }> {
    return this.eipByInstance.getRange().map(({ key, value }) => ({ instanceId: key, id: value }));
  }

  idempotencyIndex(): Iterable<{ project: string; key: string; record: IdempotencyRecord }> {
    return this.idempotency.getRange().map(({ key, value }) => ({ project: key[0], key: key[1], record: value }));
  }
}

/**
 * The `[pool, text]` entries of one pool, in key order. vm_ids and names are any text, so no end
 * key is certain to sort after all of them: the scan stops at the first key of another pool.
 */
function* keysOfPool<V>(
  db: Database<V, [string, string]>,
  pool: string,
): Generator<{ key: [string, string]; value: V }> {
  for (const entry of db.getRange({ start: [pool, ""] })) {
    if (entry.key[0] !== pool) return;
    yield entry;
  }
}

function stateKey(record: EipRecord): EipStateKey {
  return [record.pool, record.project, record.state, record.id];
}

/** Keys `[project, id]` of one project: ids are printable ASCII, so they sort below AFTER_VM_IDS. */
function projectRange(project: string): { start: [string, string]; end: [string, string] } {
  return { start: [project, ""], end: [project, AFTER_VM_IDS] };
}

/** Bytes an unprivileged writer may still use on the file system of `path` (unknown: infinite). */
export function freeBytes(path: string): number {
  try {
    const { bavail, bsize } = statfsSync(path);
    return Number(bavail) * Number(bsize);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * When a commit fails, lmdb-js rejects every write's own promise (callers hear of it: `write()`)
 * and also internal promises of the batch that no caller can hold. Bun and Deno end the process on
 * an unhandled rejection, which is how a full disk used to stop the daemon. The daemon lets those
 * echoes of a failure already answered go (they carry lmdb-js's `commitError`); any other
 * unhandled rejection still ends it, logged.
 */
export function letCommitFailureEchoesGo(onOther: (reason: unknown) => void): void {
  process.on("unhandledRejection", (reason) => {
    if (reason instanceof Error && "commitError" in reason) return;
    onOther(reason);
  });
}
