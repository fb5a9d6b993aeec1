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
import { isConnectionFailure } from "./connection.ts";
import { DatabaseUnreachableError, SchemaTooNewError, SchemaTooOldError, StoreUnavailableError } from "./errors.ts";
import { type Answers, fetchRead, keyOf, Missing, type Read, wholeRead } from "./reads.ts";
import { SCHEMA_VERSION } from "./schema.ts";
import { StepView } from "./view.ts";
import { applyWrites } from "./writes.ts";

/** Unique violation, serialization failure, deadlock: the step lost a race and is run again. */
const RETRIED = new Set(["23505", "40001", "40P01"]);
const MAX_ATTEMPTS = 20;
/**
 * A step that has asked for this many rows of one kind (of one pool), one at a time, gets all of
 * them at once instead (a consistency check, a bulk release: one query, not thousands). A write
 * step then holds all of them locked, as it would have one by one.
 */
const POINT_READS_BEFORE_WHOLE_KIND = 16;

/** Connections each daemon keeps: steps wait for one (a write step holds one until it commits). */
const CONNECTIONS = 10;

export interface PostgresStoreOptions {
  /** This daemon's identity in the fleet: its counts and cursors are kept under it. */
  readonly daemon: string;
}

export class PostgresStore implements StepStore {
  private constructor(
    private readonly sql: Sql,
    private readonly daemon: string,
  ) {}

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
      if (isConnectionFailure(error))
        throw new DatabaseUnreachableError(`cannot use the database: ${(error as Error).message}`);
      throw error;
    }
    return store;
  }

  /** Connects to `url` without checking the schema (the suites, which migrate it themselves). */
  static connect(url: string, options: PostgresStoreOptions): PostgresStore {
    const sql = postgres(url, {
      max: CONNECTIONS,
      onnotice: () => {},
      // Every bigint ippool keeps (addresses, counts, times in ms) fits in a double.
      types: { bigint: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (s: string) => Number(s) } },
    });
    return new PostgresStore(sql, options.daemon);
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
  async read<T>(step: (view: StoreView) => T): Promise<T> {
    try {
      return (await this.sql.begin(
        "isolation level repeatable read read only",
        async (tx) => (await this.run(tx, step, false)).value,
      )) as T;
    } catch (error) {
      throw unavailable(error) ?? error;
    }
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
        if (attempt >= MAX_ATTEMPTS || !RETRIED.has((error as { code?: string }).code ?? "")) {
          throw unavailable(error) ?? error;
        }
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

/**
 * A lost or refused connection as the API answers it (503). A commit whose connection broke is
 * not known to have failed; the answer says so, and the request is safe to repeat (allocation
 * and release are idempotent by vm_id).
 */
function unavailable(error: unknown): StoreUnavailableError | undefined {
  if (!isConnectionFailure(error)) return undefined;
  return new StoreUnavailableError(
    `the shared store cannot be reached (${(error as Error).message}); whether a change was made is not known: send the request again`,
  );
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
