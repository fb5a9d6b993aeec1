/**
 * Transactions whose writes go out with their COMMIT, unanswered (src/store/postgres/transaction.ts),
 * against a real PostgreSQL: a write that fails after the body has returned still fails the
 * transaction, nothing of it is committed, and the caller gets that write's own error, not the
 * "transaction is aborted" echo of the statements after it.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from "bun:test";
import postgres from "postgres";
import { inTransaction } from "../../../src/store/postgres/transaction.ts";
import { type Postgres, startPostgres } from "../../support/postgres.ts";

let cluster: Postgres;
let sql: postgres.Sql;

beforeAll(async () => {
  cluster = await startPostgres();
  sql = postgres(cluster.url, { max: 2, onnotice: () => {} });
});
afterAll(async () => {
  await sql.end();
  await cluster.stop();
});
beforeEach(async () => {
  await sql`DROP TABLE IF EXISTS held`;
  await sql`CREATE TABLE held (ip integer PRIMARY KEY, vm text NOT NULL)`;
  await sql`INSERT INTO held VALUES (1, 'taken')`;
});

const rows = async () =>
  (await sql<{ ip: number; vm: string }[]>`SELECT ip, vm FROM held ORDER BY ip`).map((r) => r.vm);

async function failure(work: () => Promise<unknown>): Promise<{ code?: string }> {
  try {
    await work();
  } catch (error) {
    return error as { code?: string };
  }
  throw new Error("the transaction committed");
}

test("writes sent without waiting are committed with the COMMIT, and the body's value is returned", async () => {
  const value = await inTransaction(sql, "", async (tx, send) => {
    const [row] = await tx<{ vm: string }[]>`SELECT vm FROM held WHERE ip = 1 FOR UPDATE`;
    send(tx`INSERT INTO held VALUES (2, 'a')`);
    send(tx`INSERT INTO held VALUES (3, 'b')`);
    return row?.vm;
  });
  expect(value).toBe("taken");
  expect(await rows()).toEqual(["taken", "a", "b"]);
});

test("a write that fails after the body returned fails the transaction with its own error, and nothing commits", async () => {
  const lost = await failure(() =>
    inTransaction(sql, "", async (tx, send) => {
      send(tx`INSERT INTO held VALUES (2, 'a')`);
      send(tx`INSERT INTO held VALUES (1, 'second holder')`);
      send(tx`INSERT INTO held VALUES (3, 'b')`);
      return "done";
    }),
  );
  expect(lost.code).toBe("23505");
  expect(await rows()).toEqual(["taken"]);
});

test("a read after a failed write reports the write's failure, not the aborted transaction", async () => {
  const lost = await failure(() =>
    inTransaction(sql, "", async (tx, send) => {
      send(tx`INSERT INTO held VALUES (1, 'second holder')`);
      await tx`SELECT count(*) FROM held`;
      return "done";
    }),
  );
  expect(lost.code).toBe("23505");
  expect(await rows()).toEqual(["taken"]);
});
