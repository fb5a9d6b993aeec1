/**
 * New allocations committed in one statement, without a transaction of reads before it
 * (docs/FLEET.md, "Allocation in one statement"). A group commit otherwise takes three round trips
 * and a dozen statements: BEGIN, the reads of the pool, its counts and the page under its row lock,
 * one read per VM, then the writes with the COMMIT. Most of a fleet daemon's CPU went there.
 *
 * A daemon takes new addresses from pages it holds, and keeps what it last read or wrote of them
 * (the store's cache: the pool's stamp, its counts, its full pages, its pages with their versions).
 * The batch's steps are run over that cache, in turn, as in a transaction. Each step is then
 * committed only if everything it decided on is checked by the statement that commits it:
 * - the pages it wrote are still held by this daemon at the epoch it claimed them, and are still
 *   at the version it read (schema.ts, v7): no other daemon changed them since (a release, a
 *   borrower), so the bits it chose from are the bits in the database;
 * - the VMs it assumed had no address have none: their rows are inserted, and a row that exists
 *   fails the statement on the schema's constraints;
 * - the pool is still stamped as it read it.
 * Counts are written as changes, so the count read need not be current; the next-fit cursor is
 * this daemon's own. A step that reads anything else (a VM's address, a name, a page it does not
 * hold) or writes anything else is left to an ordinary transaction (store.ts).
 *
 * A VM assumed to have no address that has one (a repeat: the VM was started again) fails the
 * statement. The rows of the statement's VMs are then read in one query and the batch planned
 * again over them: a repeat that found its VM's row there, read nothing an earlier step of the
 * batch wrote and writes nothing is answered from that row (true when it was read, during the
 * request), once the batch's statement is durable; the others go in one statement as before. A
 * step that writes nothing on any other grounds is left to an ordinary transaction.
 *
 * Uniqueness still rests on the schema alone: the statement fails whole, and its steps run again
 * in an ordinary transaction, whenever a check fails.
 */
import type { JSONValue, Sql } from "postgres";
import type { AllocationRecord, PoolStamp } from "../../pool/store.ts";
import type { StoreView } from "../steps.ts";
import type { LayoutCache } from "./layout-cache.ts";
import type { PageHolding } from "./pages.ts";
import { Answers, allocationKey, pageKey, pageOfKey, type Read, type StoredPage } from "./reads.ts";
import { StepView, type Write } from "./view.ts";
import { allocationRow, pageBytes } from "./writes.ts";

/** A page as a batch commits it: where it was read and held, and what is written. */
interface PlannedPage {
  readonly epoch: number;
  readonly version: number;
  bits: Uint32Array;
  full: boolean;
}

/** What a batch commits in one pool. */
export interface PoolCommit {
  readonly pool: string;
  readonly fingerprint: string;
  readonly pages: Map<number, PlannedPage>;
  readonly rows: { readonly vmId: string; readonly record: AllocationRecord }[];
  /** Names and the VMs they now stand for (the last step's, where several name one). */
  readonly names: Map<string, string>;
  delta: number;
  cursor: number;
}

export interface Plan {
  /**
   * The steps the statement commits, by their place in the batch, with what each returns; those
   * that write nothing (`wrote` false) are repeats answered from the rows read for the plan.
   */
  readonly planned: readonly { readonly index: number; readonly value: unknown; readonly wrote: boolean }[];
  /** The steps left to an ordinary transaction. */
  readonly others: readonly number[];
  /** What the cache lacks, or holds too old to be checked: fetched, the batch is planned again. */
  readonly stale: readonly Read[];
  readonly commits: readonly PoolCommit[];
  /** The batch's state after the planned steps: the counts it leaves are kept in the cache. */
  readonly answers: Answers;
}

/** Thrown by the view for a read a plan cannot rest on; a step never catches it. */
const UNPLANNED = Symbol("unplanned");

/** Writes a planned step may make: new allocations, on pages this daemon holds. */
type PlannedWrite = Extract<Write, { kind: "putAllocation" | "putPage" | "setFull" | "counts" | "putName" }>;
const PLANNED_WRITES: ReadonlySet<Write["kind"]> = new Set([
  "putAllocation",
  "putPage",
  "setFull",
  "counts",
  "putName",
]);
const isPlannedWrite = (write: Write): write is PlannedWrite => PLANNED_WRITES.has(write.kind);

/**
 * Runs the batch's steps over the cache and sorts them into those one statement can commit and the
 * rest. `rows`: VMs' rows read for this batch (`fetchAllocationsOf`), after a statement refused it.
 */
export function planBatch(
  steps: readonly ((view: StoreView) => unknown)[],
  cache: LayoutCache,
  holding: PageHolding,
  rows: ReadonlyMap<string, unknown> = new Map(),
): Plan {
  const answers = new CachedAnswers(cache, holding, rows);
  const { stale } = answers;
  const planned: { index: number; value: unknown; wrote: boolean }[] = [];
  const others: number[] = [];
  const commits = new Map<string, PoolCommit>();
  steps.forEach((step, index) => {
    const assumedAbsent = new Set<string>();
    const view = new StepView(answers, holding, (key, read) => {
      if (read.kind === "allocation") {
        assumedAbsent.add(key);
        return undefined;
      }
      if (answers.refreshable(read)) stale.set(key, read);
      throw UNPLANNED;
    });
    let value: unknown;
    answers.startStep();
    try {
      value = step(view);
    } catch {
      // A read the plan cannot answer, or a step that fails: an ordinary transaction decides.
      others.push(index);
      return;
    }
    if (view.writes.length === 0 && assumedAbsent.size === 0 && answers.answeredFromRows()) {
      planned.push({ index, value, wrote: false });
      return;
    }
    if (!addWrites(view.writes, assumedAbsent, answers, cache, commits)) {
      others.push(index);
      return;
    }
    view.carryInto(answers);
    planned.push({ index, value, wrote: true });
  });
  return { planned, others, stale: [...stale.values()], commits: [...commits.values()], answers };
}

/**
 * Adds a step's writes to the batch's commits, if every one is a planned write whose premises the
 * statement checks; otherwise adds none of them.
 */
function addWrites(
  writes: readonly Write[],
  assumedAbsent: ReadonlySet<string>,
  answers: CachedAnswers,
  cache: Answers,
  commits: Map<string, PoolCommit>,
): boolean {
  if (writes.length === 0 || !writes.every(isPlannedWrite)) return false;
  const planned = writes as readonly PlannedWrite[];
  const inserted = new Set(
    planned.flatMap((write) => (write.kind === "putAllocation" ? [allocationKey(write.pool, write.vmId)] : [])),
  );
  if ([...assumedAbsent].some((key) => !inserted.has(key))) return false;
  if (planned.some((write) => write.kind === "putAllocation" && write.exists)) return false;
  if (planned.some((write) => "index" in write && !answers.showsPage(write.pool, write.index))) return false;
  for (const write of planned) {
    const commit = commitOf(commits, write.pool, answers);
    switch (write.kind) {
      case "putAllocation":
        commit.rows.push({ vmId: write.vmId, record: write.record });
        break;
      case "putName":
        commit.names.set(write.name, write.vmId);
        break;
      case "counts":
        commit.delta += write.delta;
        commit.cursor = write.cursor;
        break;
      case "putPage":
        plannedPage(commit, cache, answers, write.index).bits = write.bits;
        break;
      case "setFull":
        plannedPage(commit, cache, answers, write.index).full = write.full;
        break;
    }
  }
  return true;
}

/** The page as the cache had it, if it was read with its version: what the statement checks it against. */
function pageBase(cache: Answers, pool: string, index: number): (StoredPage & { version: number }) | undefined {
  const page = cache.get(pageKey(pool, index)) as StoredPage | undefined;
  return page?.version === undefined ? undefined : (page as StoredPage & { version: number });
}

function commitOf(commits: Map<string, PoolCommit>, pool: string, answers: CachedAnswers): PoolCommit {
  const known = commits.get(pool);
  if (known) return known;
  const stamp = (answers.get("pools") as Map<string, PoolStamp>).get(pool) as PoolStamp;
  const commit: PoolCommit = {
    pool,
    fingerprint: stamp.fingerprint,
    pages: new Map(),
    rows: [],
    names: new Map(),
    delta: 0,
    cursor: 0,
  };
  commits.set(pool, commit);
  return commit;
}

/** The page's entry in the commit: made from the batch's view of it, checked against the cache's version. */
function plannedPage(commit: PoolCommit, cache: Answers, answers: CachedAnswers, index: number): PlannedPage {
  const known = commit.pages.get(index);
  if (known) return known;
  const base = pageBase(cache, commit.pool, index) as StoredPage & { version: number };
  const now = (answers.get(pageKey(commit.pool, index)) as StoredPage | undefined) ?? base;
  const epoch = answers.holding.held(commit.pool)?.get(index) as number;
  const page = { epoch, version: base.version, bits: now.bits, full: now.full };
  commit.pages.set(index, page);
  return page;
}

/**
 * The batch's answers over the cache. Of the cache it shows only what a plan may rest on: the
 * pools, counts and full pages (checked, or written as changes), and the pages this daemon holds
 * that were read with their version. Its `pagesOf` lists only the pages the batch wrote: the
 * cache's list of full pages is kept in step with the flags of the pages it has (layout-cache.ts),
 * so a summary needs nothing else from it.
 */
class CachedAnswers extends Answers {
  /** Whether the step running found a VM's row in `rows`, and whether it read what an earlier step wrote. */
  private rowFound = false;
  private carriedRead = false;

  constructor(
    private readonly cache: Answers,
    readonly holding: PageHolding,
    private readonly rows: ReadonlyMap<string, unknown>,
  ) {
    super();
  }

  /** What the plan found missing or too old in the cache, to fetch before planning again. */
  readonly stale = new Map<string, Read>();
  private readonly shown = new Map<string, Set<number>>();
  /** Pools whose held pages are all in the cache at a version. */
  private readonly complete = new Set<string>();

  override has(key: string): boolean {
    if (super.has(key) || this.rows.has(key)) return true;
    if (key.startsWith("fullPages\0")) this.requireHeldPages(key.slice("fullPages\0".length));
    return this.cache.has(key) && this.shows(key);
  }

  /**
   * A pool's summary is read to choose a page among those this daemon holds: each of them must be
   * in the cache at a version, or a page this daemon freed since it last planned (a release, in an
   * ordinary transaction) would still look full to it.
   */
  private requireHeldPages(pool: string): void {
    if (this.complete.has(pool)) return;
    let missing = false;
    for (const index of this.holding.held(pool)?.keys() ?? []) {
      if (this.showsPage(pool, index)) continue;
      this.stale.set(pageKey(pool, index), { kind: "page", pool, index });
      missing = true;
    }
    if (missing) throw UNPLANNED;
    this.complete.add(pool);
  }

  override get(key: string): unknown {
    if (super.has(key)) {
      this.carriedRead = true;
      return super.get(key);
    }
    if (this.rows.has(key)) {
      const row = this.rows.get(key);
      if (row !== undefined) this.rowFound = true;
      return row;
    }
    return this.shows(key) ? this.cache.get(key) : undefined;
  }

  startStep(): void {
    this.rowFound = false;
    this.carriedRead = false;
  }

  /** Whether the step's answer rests on a row read for the plan, not on the batch's own writes. */
  answeredFromRows(): boolean {
    return this.rowFound && !this.carriedRead;
  }

  /** Whether fetching `read` into the cache would let a step be planned. */
  refreshable(read: Read): boolean {
    if (read.kind === "page") return this.holding.held(read.pool)?.has(read.index) ?? false;
    return read.kind === "pools" || read.kind === "counts" || read.kind === "fullPages";
  }

  private shows(key: string): boolean {
    if (key === "pools" || key.startsWith("counts\0") || key.startsWith("fullPages\0")) return true;
    const page = pageOfKey(key);
    return page !== undefined && this.showsPage(page.pool, page.index);
  }

  /** Whether the page is one this daemon holds and the cache has with its version. */
  showsPage(pool: string, index: number): boolean {
    return this.shownPages(pool).has(index);
  }

  /** The pages of `pool` this daemon holds and the cache has with their versions (the batch does not change them). */
  private shownPages(pool: string): Set<number> {
    let shown = this.shown.get(pool);
    if (shown === undefined) {
      const held = [...(this.holding.held(pool)?.keys() ?? [])];
      shown = new Set(held.filter((index) => pageBase(this.cache, pool, index) !== undefined));
      this.shown.set(pool, shown);
    }
    return shown;
  }
}

/** A page's version after the statement. */
export interface CommittedPage {
  readonly pool: string;
  readonly page: number;
  readonly version: number;
}

/** The SQLSTATE of a page or pool no longer as the plan read it (schema.ts, v7). */
export const PLAN_STALE_STATE = "IPP02";

/** Commits the plan in one statement; resolves to the pages' new versions once it is durable. */
export function commitPlan(sql: Sql, commits: readonly PoolCommit[], daemon: string): Promise<CommittedPage[]> {
  const batch = commits.map((commit) => ({
    pool: commit.pool,
    fingerprint: commit.fingerprint,
    daemon,
    // In page order, as the function of v7 sorted them: two statements lock pages they share in one order.
    pages: [...commit.pages]
      .sort(([a], [b]) => a - b)
      .map(([page, planned]) => ({
        page,
        epoch: planned.epoch,
        version: planned.version,
        bits: pageBytes(planned.bits).toString("hex"),
        filled: planned.full,
      })),
    rows: commit.rows.map(({ vmId, record }) => allocationRow(vmId, record)),
    names: [...commit.names].map(([name, vmId]) => ({ name, vm_id: vmId })),
    delta: commit.delta,
    cursor: commit.cursor,
  }));
  return sql<CommittedPage[]>`
    SELECT pool, page, version FROM ippool_commit_allocations(${sql.json(batch as unknown as JSONValue)}::jsonb)`;
}
