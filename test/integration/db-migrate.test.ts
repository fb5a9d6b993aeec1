/**
 * `ippool db migrate` against a real PostgreSQL 15 started for this file: the schema for fleet mode
 * (docs/FLEET.md) is created once, a second run changes nothing, a database newer than the binary
 * is refused, and the database itself refuses a second holder of an address.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres, { type Sql } from "postgres";
import { SCHEMA_VERSION } from "../../src/store/postgres/schema.ts";
import { runToExit } from "../support/daemon.ts";
import { type Postgres, startPostgres } from "../support/postgres.ts";

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
