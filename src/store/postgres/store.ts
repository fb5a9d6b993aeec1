/**
 * The shared store over PostgreSQL (fleet mode, docs/FLEET.md): the same steps as the embedded
 * store runs, run over a view of the database (view.ts).
 *
 * A step runs synchronously. When it reads something not fetched yet, the view throws `Missing`;
 * the store fetches that (reads.ts) and runs the step again from the start, until it completes.
 * A write step does all of this inside one transaction, reading the rows it may change
 * `FOR UPDATE`, then sends its writes (writes.ts) with the COMMIT (transaction.ts): the promise
 * resolves after the commit and every write's answer, and after the synchronous standby's
 * acknowledgement where the server has one (`synchronous_commit`).
 *
 * What no lock can cover (two daemons inserting the same new address or instance) the schema's
 * constraints refuse; the transaction is rolled back and the step is run again in a new one, and
 * sees the winner's row. The same goes for deadlocks and serialization failures.
 *
 * Write steps are committed in groups (`write`), and each daemon takes new addresses from pages of
 * its own (pages.ts), so the fleet's daemons do not wait for one another on one page. A group's new
 * allocations on those pages skip the transaction: they are planned over what the daemon last read
 * and committed in one statement that checks it (optimistic.ts).
 */
import postgres, { type Sql, type TransactionSql } from "postgres";
import type { EipLocks } from "../../eip/locks.ts";
import type { AllocationRecord } from "../../pool/store.ts";
import type { StepStore, StoreView } from "../steps.ts";
import { openPostgres } from "./connect.ts";
import { isConnectionFailure, unavailable, unreachable } from "./connection.ts";
import { withDeadline } from "./deadline.ts";
import { SchemaTooNewError, SchemaTooOldError } from "./errors.ts";
import { LayoutCache } from "./layout-cache.ts";
import { FleetLocks } from "./locks.ts";
import { Membership } from "./membership.ts";
import {
  type CommittedPage,
  commitPlan,
  PLAN_STALE_STATE,
  type Plan,
  type PoolCommit,
  planBatch,
} from "./optimistic.ts";
import { DEFAULT_LEASE_S, PAGE_TAKEN_STATE, type PageClaimStats, PageClaims, PageTakenError } from "./pages.ts";
import {
  Answers,
  fetchAllocationsOf,
  fetchAllocationsOnHost,
  fetchRead,
  keyOf,
  Missing,
  pageKey,
  type Read,
  type Reader,
  type StoredPage,
  wholeRead,
} from "./reads.ts";
import { SCHEMA_VERSION } from "./schema.ts";
import { inTransaction, type Send } from "./transaction.ts";
import { StepView, type Write } from "./view.ts";
import { sendWrites } from "./writes.ts";

/** Unique violation, serialization failure, deadlock: the step lost a race and is run again. */
const RETRIED = new Set(["23505", "40001", "40P01"]);
const MAX_ATTEMPTS = 20;
/** Most write steps in one transaction (group commit). */
const MAX_BATCH = 64;
/** The longest a small batch waits for company under load (`gather`), and how many writes are company enough. */
const GATHER_MS = 1;
const GATHER_ENOUGH = 16;
/** Plans of a batch (optimistic.ts), each after fetching what the last one lacked, before it goes to a transaction. */
const PLAN_ROUNDS = 4;
/** Rounds of fetching for a batch's steps together before they run in turn. */
const PREFETCH_ROUNDS = 3;

/**
 * A step that has asked for this many rows of one kind (of one pool), one at a time, gets all of
 * them at once instead (a consistency check, a bulk release: one query, not thousands). A write
 * step then holds all of them locked, as it would have one by one.
 */
const POINT_READS_BEFORE_WHOLE_KIND = 16;

/** Connections each daemon keeps: steps wait for one (a write step holds one until it commits). */
const CONNECTIONS = 10;
/** A database that does not answer a connection within this is out of reach (503), not waited for. */
const CONNECT_TIMEOUT_S = 5;

/** The rows of the VMs the commits would have inserted, absent ones undefined. */
async function rowsOf(sql: Sql, commits: readonly PoolCommit[]): Promise<ReadonlyMap<string, unknown>> {
  const found = await Promise.all(
    commits.map((commit) =>
      fetchAllocationsOf(
        sql,
        commit.pool,
        commit.rows.map((row) => row.vmId),
      ),
    ),
  );
  return new Map(found.flatMap((rows) => [...rows]));
}

/** A VM's row that exists already: the key of `allocations` (pool, vm_id) refused another. */
const isVmTaken = (error: unknown) =>
  (error as { code?: string }).code === "23505" &&
  (error as { constraint_name?: string }).constraint_name === "allocations_pkey";

export interface PostgresStoreOptions {
  /** This daemon's identity in the fleet: its counts, cursors and pages are kept under it. */
  readonly daemon: string;
  /** Seconds its pages stay its own after its last heartbeat (pages.ts); the same on every daemon. */
  readonly leaseSeconds?: number;
  /**
   * Seconds a request waits for the database before it is given up (deadline.ts); the daemon's is
   * `[store] timeout_s`. None for the command-line tools: fsck and import read a whole database,
   * and their operator can interrupt them.
   */
  readonly timeoutSeconds?: number;
}

/** How write steps were committed: in one statement per batch (optimistic.ts), or in a transaction. */
export interface CommitFigures {
  readonly statement: number;
  readonly transaction: number;
  /** Steps that wrote nothing, answered from rows read for their batch (repeats). */
  readonly unwritten: number;
  /** One-statement commits refused because a page or pool had changed since it was read. */
  readonly stale: number;
}

interface QueuedWrite {
  readonly step: (view: StoreView) => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** Settles a queued write with what `work` resolves or rejects with. */
async function settle(write: QueuedWrite, work: () => Promise<unknown>): Promise<void> {
  try {
    write.resolve(await work());
  } catch (error) {
    write.reject(error);
  }
}

export class PostgresStore implements StepStore {
  private readonly queued: QueuedWrite[] = [];
  /** True while a batch is being committed: new writes wait for the next. */
  private committing = false;
  /** Writes in the batch committed last: more than one means the daemon is under load (`gather`). */
  private lastBatchSize = 0;
  /** Ends the current wait for company (`gather`), if there is one. */
  private gathered: (() => void) | undefined;

  private readonly reader: Reader;
  /**
   * The pools' layout as the last committed writes left it: guesses for `prefetch`, and the cache
   * that plans of one-statement commits rest on (optimistic.ts), checked when they commit.
   */
  private readonly layoutGuesses = new LayoutCache();
  private fleetLocks: FleetLocks | undefined;
  private readonly committed = { statement: 0, transaction: 0, unwritten: 0, stale: 0 };

  /** The store's connections, and the connection of its claims and heartbeats (see `connect`). */
  private sql: Sql;
  private claimSql: Sql;
  private readonly timeoutMs: number | undefined;
  private readonly membership: Membership;

  private constructor(
    private readonly url: string,
    private readonly open: (max: number) => Sql,
    private readonly daemon: string,
    options: PostgresStoreOptions,
  ) {
    this.sql = open(CONNECTIONS);
    this.claimSql = open(1);
    this.timeoutMs = options.timeoutSeconds === undefined ? undefined : options.timeoutSeconds * 1000;
    const leaseSeconds = options.leaseSeconds ?? DEFAULT_LEASE_S;
    this.membership = new Membership(this.claimSql, daemon, leaseSeconds);
    this.reader = { daemon, pages: new PageClaims(this.claimSql, this.membership) };
  }

  /**
   * The daemon takes its name in the fleet: refused (DaemonNameTakenError) while another live
   * process holds it; `onNameTaken` is told if one takes it later (membership.ts).
   */
  joinFleet(onNameTaken: (message: string) => void): Promise<void> {
    return this.membership.join(onNameTaken).catch((error: unknown) => {
      throw unreachable(error) ?? error;
    });
  }

  /**
   * `work` over the store's connections, given up (DatabaseSilentError, a 503) when the database
   * has not answered it within the store's timeout. Connections that went silent are presumed
   * dead (a host gone leaves them waiting for minutes, and a promoted standby is reached only
   * through new ones): they are closed and new ones opened, once per set.
   */
  private answered<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    const sql = this.sql;
    if (this.timeoutMs === undefined) return work(sql);
    return withDeadline(work(sql), this.timeoutMs, () => {
      if (sql === this.sql) this.renewConnections();
    });
  }

  /** `answered`, a failure to reach the database being the caller's 503 (STORE_UNAVAILABLE). */
  private async reached<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    try {
      return await this.answered(work);
    } catch (error) {
      throw unavailable(error) ?? error;
    }
  }

  private renewConnections(): void {
    const silent = [this.sql, this.claimSql];
    this.sql = this.open(CONNECTIONS);
    this.claimSql = this.open(1);
    this.reader.pages.useConnection(this.claimSql);
    // Statements still waiting on the old connections fail (CONNECTION_DESTROYED); nobody waits on them.
    for (const old of silent) void old.end({ timeout: 0 }).catch(() => {});
  }

  /**
   * Takes the lease of a singleton job, or renews it while this daemon holds it; the epoch goes up
   * whenever the lease starts a new holding (another daemon's, or this one's after it expired).
   */
  async acquireJob(job: string, ttlS: number): Promise<number | undefined> {
    const [row] = await this.reached(
      (sql) => sql<{ epoch: number }[]>`
        INSERT INTO job_leases (job, holder, epoch, expires_at)
        VALUES (${job}, ${this.daemon}, 1, now() + make_interval(secs => ${ttlS}))
        ON CONFLICT (job) DO UPDATE SET
          holder = excluded.holder,
          expires_at = excluded.expires_at,
          epoch = job_leases.epoch
                  + CASE WHEN job_leases.holder = excluded.holder AND job_leases.expires_at > now() THEN 0 ELSE 1 END
        WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= now()
        RETURNING epoch`,
    );
    return row?.epoch;
  }

  /** The allocations of `pool` recorded on `host` (a fleet daemon's own host's: dhcp/resync.ts). */
  allocationsOnHost(pool: string, host: string): Promise<{ vmId: string; record: AllocationRecord }[]> {
    return this.reached((sql) => fetchAllocationsOnHost(sql, pool, host));
  }

  /** The fleet's EIP, instance and host locks (locks.ts), over connections of their own. */
  eipLocks(): EipLocks {
    const silence = this.timeoutMs === undefined ? {} : { silenceS: this.timeoutMs / 1000 };
    this.fleetLocks ??= new FleetLocks(this.url, { connectS: CONNECT_TIMEOUT_S, ...silence });
    return this.fleetLocks;
  }

  /** How this daemon's write steps were committed so far (its metrics). */
  commitFigures(): CommitFigures {
    return { ...this.committed };
  }

  /** The pages this daemon holds and what its claims have done so far (its metrics). */
  pageFigures(): PageClaimStats {
    return this.reader.pages.stats();
  }

  /**
   * Connects to `url` (which may name several hosts) and checks that the database's schema is this
   * binary's: a database not migrated yet, or migrated by a newer ippool, is refused.
   */
  static async open(url: string, options: PostgresStoreOptions): Promise<PostgresStore> {
    const store = PostgresStore.connect(url, options);
    try {
      await store.checkSchema();
    } catch (error) {
      await store.close();
      throw unreachable(error) ?? error;
    }
    return store;
  }

  /** Connects to `url` without checking the schema (the suites, which migrate it themselves). */
  static connect(url: string, options: PostgresStoreOptions): PostgresStore {
    const connections = (max: number) =>
      openPostgres(url, {
        max,
        connect_timeout: CONNECT_TIMEOUT_S,
        onnotice: () => {},
        // The schema's reference from allocations to pools rests on it (schema.ts, v8).
        connection: { default_transaction_isolation: "read committed" },
        // Every bigint ippool keeps (addresses, counts, times in ms) fits in a double.
        types: { bigint: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) } },
      });
    // A step claims a page in the middle of its transaction, which may hold row locks by then. Over
    // the store's own connections the claim could wait for one held by a transaction that waits
    // for those locks: a deadlock PostgreSQL cannot see (it hung two colliding writers here). Claims
    // and heartbeats therefore have a connection of their own; a claim never waits on a row lock.
    return new PostgresStore(url, connections, options.daemon, options);
  }

  private async checkSchema(): Promise<void> {
    const [table] = await this.sql<{ name: string | null }[]>`SELECT to_regclass('ippool_schema')::text AS name`;
    const [row] = table?.name ? await this.sql<{ version: number }[]>`SELECT version FROM ippool_schema` : [];
    const version = row?.version ?? 0;
    if (version > SCHEMA_VERSION) {
      throw new SchemaTooNewError(
        `the database's schema is version ${version}, newer than this ippool's ${SCHEMA_VERSION}: upgrade ippool`,
      );
    }
    if (version < SCHEMA_VERSION) {
      throw new SchemaTooOldError(
        `the database's schema is version ${version}, this ippool needs ${SCHEMA_VERSION}: run ippool db migrate`,
      );
    }
  }

  /**
   * A read step sees one snapshot of the database, however many fetches it takes (a consistency
   * check, a listing), as an LMDB read sees one transaction.
   */
  read<T>(step: (view: StoreView) => T): Promise<T> {
    return this.reached((sql) =>
      inTransaction(
        sql,
        "isolation level repeatable read read only",
        async (tx) => (await this.run(tx, step, false)).value,
      ),
    );
  }

  /**
   * Group commit: write steps that arrive while a transaction is committing go together into the
   * next one (up to MAX_BATCH), run one after another, so one commit (one flush) serves them all.
   * Each step's promise settles after that commit.
   */
  write<T>(step: (view: StoreView) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queued.push({ step, resolve: resolve as (value: unknown) => void, reject });
      if (this.queued.length >= GATHER_ENOUGH) this.gathered?.();
      if (!this.committing) void this.commitQueued();
    });
  }

  private async commitQueued(): Promise<void> {
    this.committing = true;
    while (this.queued.length > 0) {
      if (this.lastBatchSize > 1 && this.queued.length < GATHER_ENOUGH) await this.gather();
      const batch = this.queued.splice(0, MAX_BATCH);
      this.lastBatchSize = batch.length;
      await this.commitBatch(batch);
    }
    this.committing = false;
  }

  /**
   * Under load (the last batch had company), a small batch waits a little for more writes to join
   * it, as PostgreSQL's `commit_delay` does: a transaction costs a daemon and the server far more
   * than a step in it, and three daemons sharing the load each see a few writes at a time. With
   * three daemons under 32 clients (two A/B runs) this cut CPU per allocation by 15–25 % in the
   * daemons and 18–26 % in PostgreSQL, and latency with it. A lone write on an idle daemon never
   * waits. With one-statement commits (optimistic.ts), waiting for up to 16 writes rather than 8
   * made batches 10.6–10.9 writes rather than 7.6–8.1 (three daemons, 32 clients: each has about
   * 11 in flight) and cut CPU per allocation by 12–15 % in the daemons and 23–27 % in PostgreSQL;
   * 1 ms of waiting rather than 2 gathered batches as large, sooner (4,479 and 5,220/s against
   * 4,337 and 4,544/s, alternating runs).
   */
  private gather(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.gathered = undefined;
        resolve();
      };
      const timer = setTimeout(done, GATHER_MS);
      this.gathered = done;
    });
  }

  /**
   * The batch's new allocations on this daemon's own pages in one statement (`commitPlanned`),
   * and one transaction for the rest. A step that refuses by throwing wrote nothing and is answered
   * at once. A database error (a lost race on a constraint, a deadlock with another daemon) aborts
   * the whole transaction: then every step of the batch that was not refused runs again alone.
   */
  private async commitBatch(queued: readonly QueuedWrite[]): Promise<void> {
    const batch = await this.commitPlanned(queued);
    const [only] = batch;
    if (batch.length === 0) return;
    this.committed.transaction += batch.length;
    if (batch.length === 1 && only) return settle(only, () => this.writeAlone(only.step));
    const completed: { write: QueuedWrite; value: unknown }[] = [];
    const refused = new Set<QueuedWrite>();
    const answers = new Answers();
    try {
      await this.answered((sql) =>
        inTransaction(sql, "", async (tx, send) => {
          // What one step fetched and wrote, the next one sees without asking again. Their writes
          // are kept until a step must fetch or the batch ends, then sent together (a page or a
          // count that several steps changed is written once) without waiting for the answers: the
          // connection keeps their order, and any failure among them fails the transaction.
          await this.prefetch(
            tx,
            batch.map((write) => write.step),
            answers,
          );
          let pending: Write[] = [];
          const flush = () => {
            if (pending.length === 0) return;
            sendWrites(tx, send, pending, this.daemon);
            pending = [];
          };
          for (const write of batch) {
            try {
              const { value, view } = await this.run(tx, write.step, true, answers, flush);
              pending.push(...view.writes);
              view.carryInto(answers);
              completed.push({ write, value });
            } catch (error) {
              if (error instanceof postgres.PostgresError || isConnectionFailure(error)) throw error;
              refused.add(write);
              write.reject(error);
            }
          }
          flush();
        }),
      );
    } catch (error) {
      if (error instanceof PageTakenError) this.reader.pages.fencedOut(error.pool, error.page);
      const unanswered = batch.filter((write) => !refused.has(write));
      const lost = unavailable(error);
      if (lost) for (const write of unanswered) write.reject(lost);
      else await Promise.all(unanswered.map((write) => settle(write, () => this.writeAlone(write.step))));
      return;
    }
    this.keepLayout(answers);
    for (const { write, value } of completed) write.resolve(value);
  }

  /**
   * Commits what it can of the batch in one statement (optimistic.ts) and resolves those writes;
   * returns the writes left to an ordinary transaction. What the cache lacks or holds too old is
   * fetched and the batch planned again, a few times at most.
   */
  private async commitPlanned(batch: readonly QueuedWrite[]): Promise<readonly QueuedWrite[]> {
    let rows: ReadonlyMap<string, unknown> | undefined;
    for (let round = 0; round < PLAN_ROUNDS; round++) {
      const plan = planBatch(
        batch.map((write) => write.step),
        this.layoutGuesses,
        this.reader.pages,
        rows,
      );
      if (plan.stale.length > 0) {
        if (!(await this.refresh(plan.stale))) return batch;
        continue;
      }
      if (plan.planned.length === 0) return batch;
      const written = plan.planned.filter((step) => step.wrote);
      const unwritten = plan.planned.filter((step) => !step.wrote);
      let committed: CommittedPage[] = [];
      try {
        if (plan.commits.length > 0) {
          committed = await this.answered((sql) => commitPlan(sql, plan.commits, this.daemon));
        }
      } catch (error) {
        // Refuses the statement's steps; the repeats answered from rows were not in it, and its
        // failure is not theirs: they go to the transaction with the rest.
        const refuse = (reason: unknown) => {
          for (const { index } of written) (batch[index] as QueuedWrite).reject(reason);
          return [...plan.others, ...unwritten.map(({ index }) => index)].map((index) => batch[index] as QueuedWrite);
        };
        const lost = unavailable(error);
        if (lost) return refuse(lost);
        const code = (error as { code?: string }).code ?? "";
        if (code === PLAN_STALE_STATE) {
          this.committed.stale++;
          // A page or pool changed since it was cached (another daemon's release, a borrower): what
          // the plan rested on is fetched again.
          this.forget(plan.commits);
          continue;
        }
        if (rows === undefined && isVmTaken(error)) {
          // A VM with an address already (a repeat): its row is read with the others of the
          // statement, once, and the batch planned again over them.
          try {
            rows = await this.answered((sql) => rowsOf(sql, plan.commits));
            continue;
          } catch (readError) {
            const lostRead = unavailable(readError);
            if (lostRead) return refuse(lostRead);
          }
        }
        // A page taken from this daemon (the transaction's fenced write finds which), a lost race:
        // an ordinary transaction decides.
        if (RETRIED.has(code) || code === PAGE_TAKEN_STATE) return batch;
        return refuse(error);
      }
      this.keepCommitted(plan, committed);
      this.committed.statement += written.length;
      this.committed.unwritten += unwritten.length;
      for (const { index, value } of plan.planned) (batch[index] as QueuedWrite).resolve(value);
      return plan.others.map((index) => batch[index] as QueuedWrite);
    }
    return batch;
  }

  /** Fetches into the cache what a plan found missing or too old; false if the database could not be read. */
  private async refresh(reads: readonly Read[]): Promise<boolean> {
    try {
      await this.answered((sql) =>
        Promise.all(reads.map((read) => fetchRead(sql, read, this.layoutGuesses, this.reader, false))),
      );
      return true;
    } catch {
      // An ordinary transaction meets the same failure and answers it.
      return false;
    }
  }

  /** Drops from the cache what the commits rested on: the pools' stamps and their pages. */
  private forget(commits: readonly PoolCommit[]): void {
    this.layoutGuesses.delete("pools");
    for (const commit of commits)
      for (const index of commit.pages.keys()) this.layoutGuesses.delete(pageKey(commit.pool, index));
  }

  /** Keeps in the cache the pages as the statement left them, at their new versions, and the counts. */
  private keepCommitted(plan: Plan, committed: readonly CommittedPage[]): void {
    for (const commit of plan.commits) {
      const counts = plan.answers.get(`counts\0${commit.pool}`);
      if (counts !== undefined) this.layoutGuesses.set(`counts\0${commit.pool}`, counts);
    }
    const planned = new Map(plan.commits.map((commit) => [commit.pool, commit.pages]));
    for (const { pool, page, version } of committed) {
      const written = planned.get(pool)?.get(page);
      if (!written) continue;
      this.layoutGuesses.set(pageKey(pool, page), { bits: written.bits, full: written.full, version });
      this.reader.pages.follow(pool, page, written.full);
    }
  }

  /**
   * Fetches at once what the steps will ask for, so that they do not ask one after another (a
   * round trip each). Each step is run over what is known, and where it reads something not
   * fetched, the read is noted and the step goes on with a guess: what the last transaction left
   * of the pool's layout (`layoutGuesses`), or nothing (a VM not allocated yet). Everything noted
   * is then fetched together. A step cut short by a guess gone wrong has another round. Only a
   * guess: the steps then run in turn over what was fetched, each after the writes of those before
   * it, and fetch whatever they still miss.
   */
  private async prefetch(
    tx: TransactionSql,
    steps: readonly ((view: StoreView) => unknown)[],
    answers: Answers,
  ): Promise<void> {
    for (let round = 0; round < PREFETCH_ROUNDS; round++) {
      const missing = new Map<string, Read>();
      const guess = (key: string, read: Read) => {
        missing.set(key, read);
        return this.layoutGuesses.get(key);
      };
      let cutShort = false;
      for (const step of steps) {
        try {
          step(new StepView(answers, this.reader.pages, guess));
        } catch {
          cutShort = true;
        }
      }
      // A claim changes which page the steps take (and a page this transaction has locked cannot be
      // claimed): it is made alone, and the steps are guessed again. Anything else noted is fetched
      // together, in one round trip.
      const noted = [...missing.values()];
      const claims = noted.filter((read) => read.kind === "claim");
      const fetching = claims.length > 0 ? claims : noted;
      await Promise.all(fetching.map((read) => fetchRead(tx, read, answers, this.reader, true)));
      if (claims.length === 0 && !cutShort) return;
    }
  }

  /**
   * Keeps what `answers` know of the pools' layout, over what was kept before: guesses for the
   * next transaction, and the cache plans rest on (pages read at a version keep it; pages written
   * lose it, and are read again before a plan rests on them). The pages this daemon holds follow
   * their flags (pages.ts: a full one is set aside, one with room again is held again).
   */
  private keepLayout(answers: Answers): void {
    this.layoutGuesses.keep(answers);
    for (const pool of answers.poolsWithPages()) {
      for (const index of answers.pagesOf(pool)) {
        const page = answers.get(pageKey(pool, index)) as StoredPage | undefined;
        if (page) this.reader.pages.follow(pool, index, page.full);
      }
    }
  }

  /** One step in a transaction of its own, run again (in a new one) when it loses a race. */
  private async writeAlone(step: (view: StoreView) => unknown): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      try {
        const answers = new Answers();
        const value = await this.answered((sql) =>
          inTransaction(sql, "", (tx, send) => this.runAndSend(tx, send, step, answers)),
        );
        this.keepLayout(answers);
        return value;
      } catch (error) {
        const taken = error instanceof PageTakenError;
        if (taken) this.reader.pages.fencedOut(error.pool, error.page);
        if (attempt >= MAX_ATTEMPTS || !(taken || RETRIED.has((error as { code?: string }).code ?? ""))) {
          throw unavailable(error) ?? error;
        }
      }
    }
  }

  private async runAndSend(
    tx: TransactionSql,
    send: Send,
    step: (view: StoreView) => unknown,
    answers: Answers,
  ): Promise<unknown> {
    await this.prefetch(tx, [step], answers);
    const { value, view } = await this.run(tx, step, true, answers);
    sendWrites(tx, send, view.writes, this.daemon);
    view.carryInto(answers);
    return value;
  }

  /**
   * Runs `step` until it completes, fetching what it asks for between runs; `beforeFetch` sends
   * what earlier steps of the transaction wrote and have not sent, so that a fetch sees it.
   */
  private async run<T>(
    db: Sql | TransactionSql,
    step: (view: StoreView) => T,
    locking: boolean,
    answers: Answers = new Answers(),
    beforeFetch: () => void = () => {},
  ): Promise<{ value: T; view: StepView }> {
    const pointReads = new Map<string, number>();
    for (;;) {
      const view = new StepView(answers, this.reader.pages);
      try {
        return { value: step(view), view };
      } catch (error) {
        if (!(error instanceof Missing)) throw error;
        if (answers.has(error.key)) throw new Error(`a step asked again for ${error.key}, which it has`);
        beforeFetch();
        await fetchRead(db, widened(error.read, pointReads), answers, this.reader, locking);
      }
    }
  }

  async close(): Promise<void> {
    this.reader.pages.stop();
    await this.fleetLocks?.close();
    await Promise.all([this.sql.end({ timeout: 5 }), this.claimSql.end({ timeout: 5 })]);
  }
}

/** The read to fetch for `read`: all rows of its kind (in its pool) once the step has asked for enough of them. */
function widened(read: Read, pointReads: Map<string, number>): Read {
  const whole = wholeRead(read);
  if (whole === undefined) return read;
  const key = keyOf(whole);
  const count = (pointReads.get(key) ?? 0) + 1;
  pointReads.set(key, count);
  return count > POINT_READS_BEFORE_WHOLE_KIND ? whole : read;
}
