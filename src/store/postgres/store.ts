/**
 * The shared store over PostgreSQL (fleet mode, docs/FLEET.md): the same steps as the embedded
 * store runs, run over a view of the database (view.ts).
 *
 * A step runs synchronously. When it reads something not fetched yet, the view throws `Missing`;
 * the store fetches that (reads.ts) and runs the step again from the start, until it completes.
 * A write step does all of this inside one transaction, reading the rows it may change
 * `FOR UPDATE`, then applies its writes (writes.ts) and commits: the promise resolves after the
 * commit, and after the synchronous standby's acknowledgement where the server has one
 * (`synchronous_commit`).
 *
 * What no lock can cover (two daemons inserting the same new address or instance) the schema's
 * constraints refuse; the transaction is rolled back and the step is run again in a new one, and
 * sees the winner's row. The same goes for deadlocks and serialization failures.
 *
 * This is the store's first form: every step is its own transaction, and allocations in one pool
 * wait for one another on its pages' row locks. Pages owned by daemons and group commit are the
 * next part of docs/FLEET.md.
 */
import postgres, { type Sql, type TransactionSql } from "postgres";
import type { StepStore, StoreView } from "../steps.ts";
import { type Answers, fetchRead, keyOf, Missing, type Read, wholePoolRead } from "./reads.ts";
import { StepView } from "./view.ts";
import { applyWrites } from "./writes.ts";

/** Unique violation, serialization failure, deadlock: the step lost a race and is run again. */
const RETRIED = new Set(["23505", "40001", "40P01"]);
const MAX_ATTEMPTS = 20;
/**
 * A step that has asked for this many rows of one pool, one at a time, gets all of the pool's
 * rows at once instead (a consistency check, a bulk release: one query, not thousands). A write
 * step then holds all of them locked, as it would have one by one.
 */
const POINT_READS_BEFORE_WHOLE_POOL = 16;

export interface PostgresStoreOptions {
  /** This daemon's identity in the fleet: its counts and cursors are kept under it. */
  readonly daemon: string;
  /** Connections in the pool. */
  readonly max?: number;
}

export class PostgresStore implements StepStore {
  private constructor(
    private readonly sql: Sql,
    private readonly daemon: string,
  ) {}

  /** Connects to `url` (which may name several hosts); the schema must already be migrated. */
  static connect(url: string, options: PostgresStoreOptions): PostgresStore {
    const sql = postgres(url, {
      max: options.max ?? 10,
      onnotice: () => {},
      // Every bigint ippool keeps (addresses, counts, times in ms) fits in a double.
      types: { bigint: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) } },
    });
    return new PostgresStore(sql, options.daemon);
  }

  read<T>(step: (view: StoreView) => T): Promise<T> {
    return this.run(this.sql, step, false).then(({ value }) => value);
  }

  async write<T>(step: (view: StoreView) => T): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.sql.begin(async (tx) => {
          const { value, view } = await this.run(tx, step, true);
          await applyWrites(tx, view.writes, this.daemon);
          return value;
        })) as T;
      } catch (error) {
        if (attempt >= MAX_ATTEMPTS || !RETRIED.has((error as { code?: string }).code ?? "")) throw error;
      }
    }
  }

  /** Runs `step` until it completes, fetching what it asks for between runs. */
  private async run<T>(
    db: Sql | TransactionSql,
    step: (view: StoreView) => T,
    locking: boolean,
  ): Promise<{ value: T; view: StepView }> {
    const answers: Answers = new Map();
    const pointReads = new Map<string, number>();
    for (;;) {
      const view = new StepView(answers);
      try {
        return { value: step(view), view };
      } catch (error) {
        if (!(error instanceof Missing)) throw error;
        if (answers.has(error.key)) throw new Error(`a step asked again for ${error.key}, which it has`);
        await fetchRead(db, widened(error.read, pointReads), answers, this.daemon, locking);
      }
    }
  }

  async close(): Promise<void> {
    await this.sql.end({ timeout: 5 });
  }
}

/** The read to fetch for `read`: the whole pool's rows or pages once the step has asked for enough of them. */
function widened(read: Read, pointReads: Map<string, number>): Read {
  const whole = wholePoolRead(read);
  if (whole === undefined) return read;
  const key = keyOf(whole);
  const count = (pointReads.get(key) ?? 0) + 1;
  pointReads.set(key, count);
  return count > POINT_READS_BEFORE_WHOLE_POOL ? whole : read;
}
