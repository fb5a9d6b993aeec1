/**
 * Transactions whose writes go out with their COMMIT, without waiting for the writes' answers.
 * Every round trip costs a daemon more CPU than the statements in it (a write, a wake-up and a
 * read on each side); a group commit took four: BEGIN, its reads, its writes, COMMIT. Now three.
 * (BEGIN keeps its own: on a connection reserved by hand it could go out with the first reads, but
 * the driver then no longer fails a transaction whose connection is lost, and its next statement
 * is never answered.)
 *
 * This is safe because PostgreSQL runs one connection's statements in order, and a statement that
 * fails aborts the transaction: every statement after it fails too, and the COMMIT then only rolls
 * back. So the transaction is committed exactly when every statement sent in it and the COMMIT
 * succeeded; otherwise the first failure is what the caller gets. A write whose success depends on
 * more than an error (a fenced page) must fail as a statement for this to hold (schema.ts, v4).
 */
import type { PendingQuery, Sql, TransactionSql } from "postgres";

/** Sends a statement of the transaction without waiting for its answer. */
export type Send = (statement: PendingQuery<readonly object[]> | Promise<unknown>) => void;

/** "Current transaction is aborted": a statement sent after one that failed. */
const IN_FAILED_TRANSACTION = "25P02";

/**
 * Runs `body` in a transaction (`options` as the driver's `begin` takes them) and commits it.
 * `body` reads with the transaction it is given, awaiting each answer as it needs it, and sends
 * its writes with `send`: they are confirmed with the COMMIT.
 */
export async function inTransaction<T>(
  sql: Sql,
  options: string,
  body: (tx: TransactionSql, send: Send) => Promise<T>,
): Promise<T> {
  const sent: Promise<unknown>[] = [];
  const send: Send = (statement) => {
    const answer = Promise.resolve(statement);
    answer.catch(() => {});
    sent.push(answer);
  };
  try {
    const value = (await sql.begin(options, (tx) => body(tx, send))) as T;
    // The COMMIT answered; a write that failed before it turned it into a rollback.
    await Promise.all(sent);
    return value;
  } catch (error) {
    throw (await firstFailure(sent, error)) ?? error;
  }
}

/**
 * The failure of the first statement sent that failed, when `error` is only its echo (a later
 * statement refused because the transaction was already aborted): a unique violation must reach
 * the caller as one, so that the step runs again.
 */
async function firstFailure(sent: readonly Promise<unknown>[], error: unknown): Promise<unknown> {
  if ((error as { code?: unknown }).code !== IN_FAILED_TRANSACTION) return undefined;
  for (const answer of sent) {
    const failure = await answer.then(
      () => undefined,
      (reason: unknown) => reason,
    );
    if (failure !== undefined && (failure as { code?: unknown }).code !== IN_FAILED_TRANSACTION) return failure;
  }
  return undefined;
}
