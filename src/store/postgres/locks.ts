/**
 * The fleet's EIP, instance and host locks (docs/FLEET.md, "Elastic IPs and hosts"): the
 * in-process locks first, then the same keys in the database, so that associations, moves and
 * reconciliation of one EIP, instance or host are serialised across every daemon of the fleet.
 *
 * Each scope is a transaction of its own, on connections kept apart from the store's, holding a
 * transaction-scoped advisory lock per key (taken in sorted order, as the in-process locks are)
 * for as long as its body runs: the host change and the write of the record after it. It cannot
 * outlive its transaction, so a daemon that dies, or loses its connection, lets go of its locks.
 * A lock another daemon holds past LOCK_TIMEOUT_S is given up on: the change answers 503
 * `LOCK_TIMEOUT`, having changed nothing. A database that does not answer at all is given up on
 * too (503 `STORE_UNAVAILABLE`), and the change is then never made; the connections are then
 * replaced, as the store's are (store.ts, `answered`).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Sql } from "postgres";
import { type EipLocks, KeyedLocks } from "../../eip/locks.ts";
import { openPostgres } from "./connect.ts";
import { unavailable } from "./connection.ts";
import { withDeadline } from "./deadline.ts";
import { LockTimeoutError } from "./errors.ts";

/** Longer than a host change takes: three host commands at their default timeout (10 s). */
const LOCK_TIMEOUT_S = 30;
/** Connections for lock scopes; an outermost scope may open nested ones (its host lock). */
const CONNECTIONS = 48;
/** Outermost scopes at once: a third of the connections, so nested scopes always find one. */
const OUTERMOST = CONNECTIONS / 3;
const LOCK_NOT_AVAILABLE = "55P03";

export class FleetLocks implements EipLocks {
  private readonly local = new KeyedLocks();
  private sql: Sql;
  /** Scopes running, by the connections they run on. */
  private readonly scopes = new Map<Sql, number>();
  /** Connections replaced after a silence, closed once no scope runs on them. */
  private readonly retired = new Set<Sql>();
  /** Set inside a scope: a scope opened there is nested and does not wait for an outermost slot. */
  private readonly inside = new AsyncLocalStorage<true>();
  private outermost = 0;
  private readonly waiting: (() => void)[] = [];

  /**
   * `silenceS`: how long a scope waits for a database that does not answer, past the lock timeout
   * while it takes its locks (the store's timeout, deadline.ts); none, as long as it takes.
   */
  constructor(
    private readonly url: string,
    private readonly timeouts: { readonly connectS: number; readonly lockS?: number; readonly silenceS?: number },
  ) {
    this.sql = this.open();
  }

  private open(): Sql {
    return openPostgres(this.url, { max: CONNECTIONS, connect_timeout: this.timeouts.connectS, onnotice: () => {} });
  }

  /**
   * Connections that went silent are presumed dead: a server whose machine is gone leaves them
   * hanging for minutes, and the idle ones among them would take every next scope down with them
   * (a promoted standby is reached only through new ones). New scopes get new connections, once
   * per set. The old ones are closed when the last scope on them has ended: a scope on one that is
   * sound keeps its locks to the end of its host change, and one on a silent one ends at its own
   * deadline.
   */
  private renew(silent: Sql): void {
    if (silent !== this.sql) return;
    this.sql = this.open();
    // Closed when its last scope leaves: the scope renewing it is one of them.
    this.retired.add(silent);
  }

  private enter(sql: Sql): void {
    this.scopes.set(sql, (this.scopes.get(sql) ?? 0) + 1);
  }

  private leave(sql: Sql): void {
    const left = (this.scopes.get(sql) ?? 1) - 1;
    if (left === 0) this.scopes.delete(sql);
    else this.scopes.set(sql, left);
    this.closeIfDone(sql);
  }

  /** Closes retired connections no scope runs on; a transaction still waiting there was given up on. */
  private closeIfDone(sql: Sql): void {
    if (!this.retired.has(sql) || this.scopes.has(sql)) return;
    this.retired.delete(sql);
    void sql.end({ timeout: 0 }).catch(() => {});
  }

  /**
   * An outermost scope waits for its slot before it takes any lock, in process or in the database:
   * a scope holding a slot may need a lock held by one waiting for a slot, never the reverse.
   */
  run<T>(keys: readonly string[], body: () => Promise<T>): Promise<T> {
    if (this.inside.getStore()) return this.local.run(keys, () => this.hold(keys, body));
    return this.asOutermost(() => this.inside.run(true, () => this.local.run(keys, () => this.hold(keys, body))));
  }

  private async hold<T>(keys: readonly string[], body: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const timeoutS = this.timeouts.lockS ?? LOCK_TIMEOUT_S;
    const { silenceS } = this.timeouts;
    let givenUp = false;
    const begun = Promise.withResolvers<void>();
    const acquired = Promise.withResolvers<void>();
    const ended = Promise.withResolvers<void>();
    const sql = this.sql;
    this.enter(sql);
    const transaction = sql.begin(async (tx) => {
      await tx.unsafe(`SET LOCAL lock_timeout = '${timeoutS}s'`);
      begun.resolve();
      for (const key of sorted) await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`ippool ${key}`}, 0))`;
      // Locks granted after their request was answered 503: the change must not run now.
      if (givenUp) throw new Error("lock scope given up on before its locks were granted");
      acquired.resolve();
      try {
        return await body();
      } finally {
        ended.resolve();
      }
    });
    try {
      if (silenceS === undefined) return (await transaction) as T;
      // A database that does not answer is given up on: at the transaction's start (a live one
      // answers at once), while taking the locks (past their own timeout), and at the COMMIT
      // after the change. Not during the change, whose host commands and store writes have
      // timeouts of their own.
      const settled = transaction.then(
        () => {},
        () => {},
      );
      const giveUp = () => {
        givenUp = true;
        this.renew(sql);
      };
      await withDeadline(Promise.race([begun.promise, settled]), silenceS * 1000, giveUp);
      // Each lock may wait its own timeout.
      const lockingMs = (sorted.length * timeoutS + silenceS) * 1000;
      await withDeadline(Promise.race([acquired.promise, settled]), lockingMs, giveUp);
      await Promise.race([ended.promise, settled]);
      return (await withDeadline(transaction, silenceS * 1000, () => this.renew(sql))) as T;
    } catch (error) {
      if ((error as { code?: string }).code === LOCK_NOT_AVAILABLE) {
        throw new LockTimeoutError(
          `another daemon has held ${sorted.join(", ")} for over ${timeoutS} s (a change under way there); nothing was changed: send the request again`,
        );
      }
      // The body may have changed a host and written its record before the connection broke.
      throw unavailable(error) ?? error;
    } finally {
      this.leave(sql);
    }
  }

  private async asOutermost<T>(body: () => Promise<T>): Promise<T> {
    while (this.outermost >= OUTERMOST) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.outermost++;
    try {
      return await body();
    } finally {
      this.outermost--;
      this.waiting.shift()?.();
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.sql, ...this.retired].map((sql) => sql.end({ timeout: 5 })));
  }
}
