/**
 * The view a step sees over the shared store: what has been fetched (reads.ts), with the step's
 * own writes over it. Reads of anything not fetched throw `Missing`; writes are recorded as
 * `Write`s for the store to apply in the step's transaction (writes.ts), in the order made.
 *
 * The schema keeps some of LMDB's indexes as columns: an allocation's address is its `ip` column
 * (so `putAddress` only updates what this step sees), an EIP's instance its `instance_id`, and a
 * pool's summary its pages' `full` flags.
 */
import type { EipRecord, EipState, IdempotencyRecord } from "../../eip/store.ts";
import { clearBit, PAGE_BITS, setBit, testBit, zeroedWords } from "../../pool/bitmap.ts";
import type { AllocationRecord, PoolCounters, PoolStamp } from "../../pool/store.ts";
import type { StoreView } from "../steps.ts";
import type { PageHolding } from "./pages.ts";
import {
  type Answers,
  addressKey,
  allocationKey,
  eipKey,
  idempotencyKey,
  instanceKey,
  keyOf,
  Missing,
  nameKey,
  pageKey,
  type Read,
  type StoredCounts,
  type StoredPage,
  wholeRead,
} from "./reads.ts";

export type Write =
  | { readonly kind: "putStamp"; readonly pool: string; readonly stamp: PoolStamp; readonly pageCount: number }
  | { readonly kind: "removePool"; readonly pool: string }
  | { readonly kind: "counts"; readonly pool: string; readonly delta: number; readonly cursor: number }
  | { readonly kind: "setFull"; readonly pool: string; readonly index: number; readonly full: boolean }
  | {
      readonly kind: "putPage";
      readonly pool: string;
      readonly index: number;
      readonly bits: Uint32Array;
      /** The epoch of this daemon's claim of the page, where it holds it: the write is refused if the page was taken since. */
      readonly fence: number | undefined;
    }
  | { readonly kind: "removePage"; readonly pool: string; readonly index: number }
  | {
      readonly kind: "putAllocation";
      readonly pool: string;
      readonly vmId: string;
      readonly record: AllocationRecord;
      /** Whether the row existed when read (locked): an update of it, else an insert that a rival's insert defeats. */
      readonly exists: boolean;
    }
  | { readonly kind: "removeAllocation"; readonly pool: string; readonly vmId: string }
  | { readonly kind: "putName"; readonly pool: string; readonly name: string; readonly vmId: string }
  | { readonly kind: "removeName"; readonly pool: string; readonly name: string }
  | { readonly kind: "putEip"; readonly record: EipRecord; readonly exists: boolean }
  | { readonly kind: "removeEip"; readonly id: string }
  | {
      readonly kind: "putIdempotency";
      readonly project: string;
      readonly key: string;
      readonly record: IdempotencyRecord;
      readonly exists: boolean;
    }
  | { readonly kind: "removeIdempotency"; readonly project: string; readonly key: string };

/** Writes that change a pool's layout: nothing fetched before them is carried to the next step. */
const LAYOUT_WRITES: ReadonlySet<Write["kind"]> = new Set(["putStamp", "removePool", "removePage"]);

/**
 * What a range read covers, so a write can tell which range reads it changed: a pool's pages, its
 * allocation rows (allocations and addresses) and its names, each a bit kept under the pool's name,
 * and the EIPs (all of them, under a name no pool has). Bits, not keys: no key is made and hashed
 * for every write of a step.
 */
const PAGES = 1;
const ROWS = 2;
const NAMES = 4;
const EIPS = "\0eips";

/** The range reads each kind of write changes, as scope bits of its pool (of `EIPS` for an EIP's). */
const SCOPES: Readonly<Record<Write["kind"], number>> = {
  removePool: PAGES | ROWS | NAMES,
  putStamp: PAGES, // makes the pool's page rows
  putPage: PAGES,
  removePage: PAGES,
  putAllocation: ROWS,
  removeAllocation: ROWS,
  putName: NAMES,
  removeName: NAMES,
  putEip: ROWS,
  removeEip: ROWS,
  counts: 0,
  setFull: 0,
  putIdempotency: 0,
  removeIdempotency: 0,
};

/** Whose scope bits a write changes: its pool's, or every EIP's. */
function scopeOwner(write: Write): string {
  return "pool" in write ? write.pool : EIPS;
}

/**
 * What a view does when a step reads something not fetched: by default it throws `Missing` (the
 * store fetches it and runs the step again); a store guessing ahead (store.ts, `prefetch`) notes
 * the read instead and lets the step go on with a guess.
 */
export type OnMissing = (key: string, read: Read) => unknown;

const throwMissing: OnMissing = (key, read) => {
  throw new Missing(key, read);
};

/** The pages of a stamped pool, from its CIDR's prefix alone (a stamp's CIDR was checked when it was made). */
function pageCountOf(stamp: PoolStamp): number {
  const prefix = Number(stamp.cidr.slice(stamp.cidr.indexOf("/") + 1));
  return Math.ceil(2 ** (32 - prefix) / PAGE_BITS);
}

export class StepView implements StoreView {
  readonly writes: Write[] = [];
  /** Point keys this step wrote, with their new values (undefined: removed). */
  private readonly written = new Map<string, unknown>();
  /** Range scopes this step wrote to (SCOPES), by owner: their range reads would no longer be what was fetched. */
  private readonly changed = new Map<string, number>();
  /** Pools removed by this step: nothing fetched of them holds any more. */
  private readonly removed = new Set<string>();
  /** Pages whose bits or flag this step wrote, by pool. */
  private readonly pagesWritten = new Map<string, Set<number>>();

  constructor(
    private readonly answers: Answers,
    private readonly holding: PageHolding,
    private readonly onMissing: OnMissing = throwMissing,
  ) {}

  /**
   * Leaves in `answers` what this step's writes made true, for the next step in the same
   * transaction (group commit): the rows it read were locked, and those it wrote are this
   * transaction's, so they hold until it ends. Range answers no longer hold and go; after a step
   * that changed a pool's layout (start-up's adoption) nothing is carried over.
   */
  carryInto(answers: Answers): void {
    if (this.writes.some((write) => LAYOUT_WRITES.has(write.kind))) {
      answers.clear();
      return;
    }
    if (this.written.size === 0) return;
    for (const key of [...answers.ranges]) answers.delete(key);
    for (const [key, value] of this.written) {
      if (key.startsWith("full\0")) continue;
      if (key.startsWith("page\0")) {
        const before = answers.get(key) as StoredPage | undefined;
        const full = this.written.get(`full${key.slice("page".length)}`) as boolean | undefined;
        answers.set(key, value && { bits: value as Uint32Array, full: full ?? before?.full ?? false });
      } else answers.set(key, value);
    }
    for (const [key, full] of this.written) {
      if (!key.startsWith("full\0")) continue;
      const page = `page${key.slice("full".length)}`;
      const stored = answers.get(page) as StoredPage | undefined;
      // Without the version it was read at: the flag written is a state the database numbers anew.
      if (stored) answers.set(page, { bits: stored.bits, full: full as boolean });
    }
  }

  private fetched<T>(read: Read): T {
    const key = keyOf(read);
    if (this.written.has(key)) return this.written.get(key) as T;
    if (this.answers.has(key)) return this.answers.get(key) as T;
    const whole = wholeRead(read);
    if (whole !== undefined && this.answers.has(keyOf(whole))) return undefined as T;
    return this.onMissing(key, read) as T;
  }

  /** A range read. The step rule (reads first, writes last) makes one after a write a mistake. */
  private range<T>(read: Read, owner: string, scope: number): T {
    if ((this.changed.get(owner) ?? 0) & scope) {
      throw new Error(`a step read ${keyOf(read).replaceAll("\0", " ")} after writing to it (store/steps.ts)`);
    }
    return this.fetched(read);
  }

  /**
   * Whether the row `read` names existed when fetched (and locked), whatever the step wrote since:
   * a row the step puts without having read it is fetched first (the step runs again).
   */
  private existed(read: Read): boolean {
    const key = keyOf(read);
    if (this.answers.has(key)) return this.answers.get(key) !== undefined;
    const whole = wholeRead(read);
    if (whole !== undefined && this.answers.has(keyOf(whole))) return false;
    return this.onMissing(key, read) !== undefined;
  }

  private write(write: Write, key?: string, value?: unknown): void {
    this.writes.push(write);
    if (write.kind === "setFull" || write.kind === "putPage" || write.kind === "removePage") {
      const pages = this.pagesWritten.get(write.pool) ?? new Set<number>();
      pages.add(write.index);
      this.pagesWritten.set(write.pool, pages);
    }
    const scope = SCOPES[write.kind];
    if (scope !== 0) this.change(scopeOwner(write), scope);
    if (key !== undefined) this.written.set(key, value);
  }

  private change(owner: string, scope: number): void {
    this.changed.set(owner, (this.changed.get(owner) ?? 0) | scope);
  }

  poolNames(): string[] {
    const names = new Set(this.fetched<Map<string, PoolStamp>>({ kind: "pools" }).keys());
    for (const [key, stamp] of this.written) {
      if (!key.startsWith("stamp\0")) continue;
      const pool = key.slice("stamp\0".length);
      if (stamp === undefined) names.delete(pool);
      else names.add(pool);
    }
    return [...names].sort();
  }

  getStamp(pool: string): PoolStamp | undefined {
    const key = `stamp\0${pool}`;
    if (this.written.has(key)) return this.written.get(key) as PoolStamp | undefined;
    return this.fetched<Map<string, PoolStamp>>({ kind: "pools" }).get(pool);
  }

  putStamp(pool: string, stamp: PoolStamp): void {
    this.write({ kind: "putStamp", pool, stamp, pageCount: pageCountOf(stamp) }, `stamp\0${pool}`, stamp);
  }

  getCounters(pool: string): PoolCounters | undefined {
    const key = `counts\0${pool}`;
    if (this.written.has(key)) return this.written.get(key) as PoolCounters | undefined;
    if (this.getStamp(pool) === undefined) return undefined;
    return this.fetched<StoredCounts>({ kind: "counts", pool });
  }

  /** Counts are kept per daemon and summed: a change is written as this daemon's delta. */
  putCounters(pool: string, counters: PoolCounters): void {
    const key = `counts\0${pool}`;
    const before = this.written.has(key)
      ? (this.written.get(key) as PoolCounters | undefined)
      : this.removed.has(pool)
        ? undefined
        : this.fetched<StoredCounts>({ kind: "counts", pool });
    const delta = counters.allocated - (before?.allocated ?? 0);
    this.write({ kind: "counts", pool, delta, cursor: counters.cursor }, key, { ...counters });
  }

  removePool(pool: string): void {
    this.write({ kind: "removePool", pool }, `stamp\0${pool}`, undefined);
    this.written.set(`counts\0${pool}`, undefined);
    for (const key of [...this.written.keys()]) {
      if (key.startsWith(`page\0${pool}\0`) || key.startsWith(`full\0${pool}\0`)) this.written.delete(key);
    }
    this.pagesWritten.delete(pool);
    this.removed.add(pool);
  }

  /**
   * The summary (a bit per page with a free address) is the pages' `full` flags: one row per
   * page, none per pool, so allocations on different pages never wait for one another here.
   * Built from the list of full pages, then the flags of the pages fetched (locked, so fresher)
   * and those this step wrote: no walk over every page of a large pool.
   */
  getSummary(pool: string): Uint32Array | undefined {
    const stamp = this.getStamp(pool);
    if (stamp === undefined) return undefined;
    const pageCount = pageCountOf(stamp);
    // Never turned into bytes (zeroedWords): a summary is kept as the pages' flags.
    const summary = new Uint32Array(Math.max(1, Math.ceil(pageCount / 32)));
    summary.fill(0xffffffff, 0, pageCount >>> 5);
    if (pageCount & 31) summary[pageCount >>> 5] = (1 << (pageCount & 31)) - 1;
    const fetchedFull = this.fetchedFullPages(pool);
    for (const index of fetchedFull) if (index < pageCount) clearBit(summary, index);
    for (const index of this.fresherPages(pool)) {
      if (index >= pageCount) continue;
      if (this.isFull(pool, index, fetchedFull)) clearBit(summary, index);
      else setBit(summary, index);
    }
    return summary;
  }

  /** The list of full pages as fetched; none of a pool this step removed. */
  private fetchedFullPages(pool: string): Set<number> {
    return this.removed.has(pool) ? new Set<number>() : this.fetched<Set<number>>({ kind: "fullPages", pool });
  }

  /**
   * The pages whose flags are fresher than the list of full pages: those fetched (locked) and those
   * this step wrote. Any other page is full exactly when the list says so.
   */
  private fresherPages(pool: string): Set<number> {
    const removed = this.removed.has(pool);
    return new Set([...(removed ? [] : this.answers.pagesOf(pool)), ...(this.pagesWritten.get(pool) ?? [])]);
  }

  /** This step's flag, else the locked page's (fresher than the list of full pages), else the list's. */
  private isFull(pool: string, index: number, fetchedFull: Set<number>): boolean {
    const written = this.written.get(`full\0${pool}\0${index}`) as boolean | undefined;
    if (written !== undefined) return written;
    // A page this step removed (a pool shrinking) has no address left: a summary put after it must
    // not write a flag for it, which would make its row again.
    const key = pageKey(pool, index);
    if (this.written.has(key) && this.written.get(key) === undefined) return true;
    const page = this.removed.has(pool) ? undefined : (this.answers.get(key) as StoredPage | undefined);
    return page?.full ?? fetchedFull.has(index);
  }

  putSummary(pool: string, words: Uint32Array): void {
    const before = this.getSummary(pool) ?? zeroedWords(words.length);
    for (let index = 0; index < words.length * 32; index++) {
      const free = testBit(words, index);
      if (index < before.length * 32 && free === testBit(before, index)) continue;
      if (index >= before.length * 32 && !free) continue;
      this.write({ kind: "setFull", pool, index, full: !free }, `full\0${pool}\0${index}`, !free);
    }
  }

  /**
   * The pages this daemon holds that have a free address. Holding none, it has one claimed (the
   * step runs again); with nothing left to claim, it borrows: any page with a free address will
   * do, and it waits for that page's row lock as its holder does. The held pages are looked up in
   * the list of full pages, as the summary would flag them, rather than the whole summary built
   * for every allocation; only those fetched or written have their own flags read (through their
   * keys: too slow to do for every held page, bench/plan.ts).
   */
  pagesToAllocateFrom(pool: string): Uint32Array | undefined {
    const stamp = this.getStamp(pool);
    if (stamp === undefined) return undefined;
    const pageCount = pageCountOf(stamp);
    const fetchedFull = this.fetchedFullPages(pool);
    const fresher = this.fresherPages(pool);
    const own = new Uint32Array(Math.max(1, Math.ceil(pageCount / 32)));
    let holdsAny = false;
    for (const index of this.holding.held(pool)?.keys() ?? []) {
      if (index >= pageCount) continue;
      if (fresher.has(index) ? this.isFull(pool, index, fetchedFull) : fetchedFull.has(index)) continue;
      setBit(own, index);
      holdsAny = true;
    }
    if (holdsAny) return own;
    this.fetched({ kind: "claim", pool, generation: this.holding.generation(pool) });
    return this.getSummary(pool);
  }

  /** A copy: the pool logic changes the page it is given before putting it back. */
  getPage(pool: string, index: number): Uint32Array | undefined {
    const key = pageKey(pool, index);
    if (this.written.has(key)) return (this.written.get(key) as Uint32Array | undefined)?.slice();
    if (this.removed.has(pool)) return undefined;
    return this.fetched<StoredPage | undefined>({ kind: "page", pool, index })?.bits.slice();
  }

  putPage(pool: string, index: number, words: Uint32Array): void {
    const bits = words.slice();
    const fence = this.holding.held(pool)?.get(index);
    this.write({ kind: "putPage", pool, index, bits, fence }, pageKey(pool, index), bits);
  }

  removePage(pool: string, index: number): void {
    this.write({ kind: "removePage", pool, index }, pageKey(pool, index), undefined);
  }

  pageIndexes(pool: string): Iterable<number> {
    return this.range<number[]>({ kind: "pageIndexes", pool }, pool, PAGES);
  }

  getAllocation(pool: string, vmId: string): AllocationRecord | undefined {
    return this.fetched({ kind: "allocation", pool, vmId });
  }

  putAllocation(pool: string, vmId: string, record: AllocationRecord): void {
    const exists = this.existed({ kind: "allocation", pool, vmId });
    this.write({ kind: "putAllocation", pool, vmId, record, exists }, allocationKey(pool, vmId), record);
  }

  removeAllocation(pool: string, vmId: string): void {
    this.write({ kind: "removeAllocation", pool, vmId }, allocationKey(pool, vmId), undefined);
  }

  allocationEntries(pool: string): Iterable<{ vmId: string; record: AllocationRecord }> {
    return this.range({ kind: "allocations", pool }, pool, ROWS);
  }

  vmNamed(pool: string, name: string): string | undefined {
    return this.fetched({ kind: "name", pool, name });
  }

  putName(pool: string, name: string, vmId: string): void {
    this.write({ kind: "putName", pool, name, vmId }, nameKey(pool, name), vmId);
  }

  removeName(pool: string, name: string): void {
    this.write({ kind: "removeName", pool, name }, nameKey(pool, name), undefined);
  }

  vmNames(pool: string): Iterable<{ name: string; vmId: string }> {
    return this.range({ kind: "names", pool }, pool, NAMES);
  }

  vmAt(pool: string, ip: number): string | undefined {
    return this.fetched({ kind: "address", pool, ip });
  }

  /** The allocation's own row carries its address: only this step's view changes. */
  putAddress(pool: string, ip: number, vmId: string): void {
    this.written.set(addressKey(pool, ip), vmId);
    this.change(pool, ROWS);
  }

  removeAddress(pool: string, ip: number): void {
    this.written.set(addressKey(pool, ip), undefined);
    this.change(pool, ROWS);
  }

  addresses(pool: string, fromIp: number, toIp: number, limit?: number): Iterable<{ ip: number; vmId: string }> {
    return this.range({ kind: "addresses", pool, from: fromIp, to: toIp, limit }, pool, ROWS);
  }

  holdsJob(job: string, epoch: number): boolean {
    return this.fetched<boolean>({ kind: "job", job, epoch });
  }

  getEip(id: string): EipRecord | undefined {
    return this.fetched({ kind: "eip", id });
  }

  putEip(record: EipRecord): void {
    const exists = this.existed({ kind: "eip", id: record.id });
    this.write({ kind: "putEip", record, exists }, eipKey(record.id), record);
  }

  removeEip(record: EipRecord): void {
    this.write({ kind: "removeEip", id: record.id }, eipKey(record.id), undefined);
  }

  eipIdsOfProject(project: string): Iterable<string> {
    return this.range<string[]>({ kind: "eipsOfProject", project }, EIPS, ROWS);
  }

  countEipsOfProject(project: string): number {
    return this.range<string[]>({ kind: "eipsOfProject", project }, EIPS, ROWS).length;
  }

  allEips(): Iterable<EipRecord> {
    return this.range({ kind: "allEips" }, EIPS, ROWS);
  }

  countEips(pool: string, project: string, state: EipState): number {
    return this.range({ kind: "eipCount", pool, project, state }, EIPS, ROWS);
  }

  eipOfInstance(instanceId: string): string | undefined {
    return this.fetched({ kind: "instance", instanceId });
  }

  /** The EIP's own row carries its instance (`putEip`): only this step's view changes. */
  putInstanceEip(instanceId: string, id: string): void {
    this.written.set(instanceKey(instanceId), id);
  }

  removeInstanceEip(instanceId: string): void {
    this.written.set(instanceKey(instanceId), undefined);
  }

  getIdempotency(project: string, key: string): IdempotencyRecord | undefined {
    return this.fetched({ kind: "idempotency", project, key });
  }

  putIdempotency(project: string, key: string, record: IdempotencyRecord): void {
    const exists = this.existed({ kind: "idempotency", project, key });
    this.write({ kind: "putIdempotency", project, key, record, exists }, idempotencyKey(project, key), record);
  }

  removeIdempotency(project: string, key: string): void {
    this.write({ kind: "removeIdempotency", project, key }, idempotencyKey(project, key), undefined);
  }
}
