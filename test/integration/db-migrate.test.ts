/**
 * `ippool db migrate` against a real PostgreSQL 15 started for this file: the schema for fleet mode
 * (docs/FLEET.md) is created once, a second run changes nothing, a database newer than the binary
 * is refused, and the database itself refuses a second holder of an address and an allocation
 * without its pool.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres, { type ReservedSql, type Sql } from "postgres";
import { SCHEMA_VERSION } from "../../src/store/postgres/schema.ts";
import { runToExit } from "../support/daemon.ts";
import { type Postgres, startPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/processes.ts";

let pg: Postgres;
let sql: Sql;

beforeAll(async () => {
  pg = await startPostgres();
  sql = postgres(pg.url, { max: 1, onnotice: () => {} });
}, 60_000);
afterAll(async () => {
  await sql?.end();
  await pg?.stop();
});

/** Runs `use` in a session of its own (one reserved connection) beside the file's `sql`. */
async function withOtherSession(use: (other: ReservedSql) => Promise<void>): Promise<void> {
  const client = postgres(pg.url, { max: 1, onnotice: () => {} });
  const other = await client.reserve();
  try {
    await use(other);
  } finally {
    other.release();
    await client.end();
  }
}

/** Until some statement waits for a lock: the race a test set up has begun (each poll its own snapshot). */
async function untilWaitingForLock(): Promise<void> {
  const watcher = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    const waiting = async () =>
      (
        await watcher<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'`
      )[0]?.n !== 0;
    await waitFor(waiting, 10_000, () => "no statement began to wait for a lock", 10);
  } finally {
    await watcher.end();
  }
}

/**
 * What `statement` fails with (undefined if it succeeds), caught from the start: a statement
 * released by another session's COMMIT may fail before that COMMIT's answer arrives, and a
 * rejection nobody handles yet fails the test.
 */
function refusal(statement: Promise<unknown>): Promise<unknown> {
  return statement.then(
    () => undefined,
    (error: unknown) => error,
  );
}

async function tables(): Promise<string[]> {
  const rows = await sql<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`;
  return rows.map((row) => row.name);
}

test("a new database gets the whole schema at this binary's version", async () => {
  const result = await runToExit(["db", "migrate", "--database-url", pg.url]);
  expect(result.stderr).toBe("");
  expect(result.stdout).toBe(`database schema: version 0 → ${SCHEMA_VERSION}\n`);
  expect(result.code).toBe(0);
  expect(await tables()).toEqual([
    "allocations",
    "daemons",
    "eip_idempotency",
    "eips",
    "ippool_schema",
    "job_leases",
    "pool_counts",
    "pool_pages",
    "pools",
    "vm_names",
  ]);
});

test("migrating again changes nothing; the URL may come from IPPOOL_DATABASE_URL", async () => {
  const result = await runToExit(["db", "migrate"], { IPPOOL_DATABASE_URL: pg.url });
  expect([result.code, result.stdout]).toEqual([0, `database schema: version ${SCHEMA_VERSION}, nothing to do\n`]);
});

test("the database refuses a second holder of an address, whatever a daemon does", async () => {
  await sql`INSERT INTO pools (name, cidr, fingerprint) VALUES ('vms', '10.0.0.0/24', 'f')`;
  await sql`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('vms', 'a', 167772162, now())`;
  const second = sql`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('vms', 'b', 167772162, now())`;
  await expect(second).rejects.toMatchObject({ code: "23505", constraint_name: "allocations_pool_ip_key" });
  const again = sql`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('vms', 'a', 167772163, now())`;
  await expect(again).rejects.toMatchObject({ code: "23505", constraint_name: "allocations_pkey" });
  const page = sql`INSERT INTO pool_pages (pool, page, bits) VALUES ('vms', 0, '\\x00'::bytea)`;
  await expect(page).rejects.toMatchObject({ code: "23514" });
  expect([...(await sql`SELECT vm_id FROM allocations`)]).toEqual([{ vm_id: "a" }]);
});

test("the database refuses allocations of a pool that does not exist, and a pool's removal while it has any", async () => {
  const orphan = sql`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('gone', 'x', 167772170, now())`;
  await expect(orphan).rejects.toMatchObject({ code: "23503" });
  await expect(sql`DELETE FROM pools WHERE name = 'vms'`).rejects.toMatchObject({ code: "23503" });
  await expect(sql`UPDATE allocations SET pool = 'other' WHERE vm_id = 'a'`).rejects.toMatchObject({ code: "23503" });
  await expect(sql`UPDATE pools SET name = 'renamed' WHERE name = 'vms'`).rejects.toMatchObject({ code: "23503" });
  await expect(sql`TRUNCATE pools CASCADE`).rejects.toMatchObject({ code: "23503" });
  expect([...(await sql`SELECT pool, vm_id FROM allocations`)]).toEqual([{ pool: "vms", vm_id: "a" }]);
  expect([...(await sql`SELECT name FROM pools`)]).toEqual([{ name: "vms" }]);
});

test("a pool removed while another transaction inserts its allocations: whichever commits first wins, no allocation outlives its pool", async () => {
  await sql`INSERT INTO pools (name, cidr, fingerprint) VALUES ('race', '10.1.0.0/24', 'f')`;
  await withOtherSession(async (inserting) => {
    // The insert first: the removal waits for it, then finds its allocation.
    await inserting`BEGIN`;
    await inserting`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('race', 'r1', 167837698, now())`;
    const removal = refusal(sql`DELETE FROM pools WHERE name = 'race'`.execute());
    await untilWaitingForLock();
    await inserting`COMMIT`;
    expect(await removal).toMatchObject({ code: "23503" });
    await sql`DELETE FROM allocations WHERE pool = 'race'`;
    // The removal first: the insert waits for it, then finds no pool.
    await inserting`BEGIN`;
    await inserting`DELETE FROM pools WHERE name = 'race'`;
    const insert = refusal(
      sql`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('race', 'r2', 167837699, now())`.execute(),
    );
    await untilWaitingForLock();
    await inserting`COMMIT`;
    expect(await insert).toMatchObject({ code: "23503" });
  });
  expect([...(await sql`SELECT vm_id FROM allocations WHERE pool = 'race'`)]).toEqual([]);
  expect([...(await sql`SELECT name FROM pools WHERE name = 'race'`)]).toEqual([]);
});

test("a removal waits for a transaction allocating in another pool, which may still write the removed pool's pages", async () => {
  await sql`INSERT INTO pools (name, cidr, fingerprint) VALUES ('old', '10.3.0.0/24', 'f')`;
  await sql`INSERT INTO pool_pages (pool, page, bits) VALUES ('old', 0, ${Buffer.alloc(512)})`;
  await withOtherSession(async (allocating) => {
    await allocating`BEGIN`;
    await allocating`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('vms', 'd1', 167772180, now())`;
    const removal = sql`DELETE FROM pools WHERE name = 'old'`.execute();
    await untilWaitingForLock();
    await allocating`UPDATE pool_pages SET filled = true WHERE pool = 'old' AND page = 0`;
    await allocating`COMMIT`;
    await removal;
  });
  expect([...(await sql`SELECT name FROM pools WHERE name = 'old'`)]).toEqual([]);
  expect([...(await sql`SELECT page FROM pool_pages WHERE pool = 'old'`)]).toEqual([]);
  expect([...(await sql`SELECT vm_id FROM allocations WHERE vm_id = 'd1'`)]).toEqual([{ vm_id: "d1" }]);
});

test("outside read committed, an insert locks its pool's row as a foreign key does, and a pool is not removed", async () => {
  await sql`INSERT INTO pools (name, cidr, fingerprint) VALUES ('rr', '10.2.0.0/24', 'f')`;
  const removal = sql.begin("isolation level repeatable read", (tx) => tx`DELETE FROM pools WHERE name = 'rr'`);
  await expect(removal).rejects.toMatchObject({ code: "25000" });
  await withOtherSession((other) =>
    sql.begin("isolation level repeatable read", async (tx) => {
      await tx`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('rr', 'q', 167903234, now())`;
      const locker = other`SELECT 1 FROM pools WHERE name = 'rr' FOR UPDATE NOWAIT`;
      await expect(locker).rejects.toMatchObject({ code: "55P03" });
    }),
  );
  const missing = sql.begin(
    "isolation level repeatable read",
    (tx) => tx`INSERT INTO allocations (pool, vm_id, ip, created_at) VALUES ('nowhere', 'q', 167903235, now())`,
  );
  await expect(missing).rejects.toMatchObject({ code: "23503" });
  await sql`DELETE FROM allocations WHERE pool = 'rr'`;
  await sql`DELETE FROM pools WHERE name = 'rr'`;
  expect([...(await sql`SELECT name FROM pools WHERE name = 'rr'`)]).toEqual([]);
});

test("a database whose schema is newer than the binary is refused (exit 2) and left as it is", async () => {
  await sql`UPDATE ippool_schema SET version = 99`;
  const result = await runToExit(["db", "migrate", "--database-url", pg.url]);
  expect(result.code).toBe(2);
  expect(result.stderr).toContain(`the database's schema is version 99, newer than this ippool's ${SCHEMA_VERSION}`);
  expect([...(await sql`SELECT version FROM ippool_schema`)]).toEqual([{ version: 99 }]);
  await sql`UPDATE ippool_schema SET version = ${SCHEMA_VERSION}`;
});

test("no database where the URL points: exit 3 naming it; no URL at all: usage (exit 2)", async () => {
  const gone = await runToExit(["db", "migrate", "--database-url", "postgres://test@127.0.0.1:1/postgres"]);
  expect(gone.code).toBe(3);
  expect(gone.stderr).toContain("cannot use the database");
  const missing = await runToExit(["db", "migrate"], { IPPOOL_DATABASE_URL: "" });
  expect(missing.code).toBe(2);
  expect(missing.stderr).toContain("usage: ippool db migrate | ippool db import DATA_DIR, with --database-url URL");
});
