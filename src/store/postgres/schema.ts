/**
 * The shared store's schema for fleet mode (docs/FLEET.md), as numbered versions. `migrate` brings
 * a database up to this binary's version, one transaction for all of it, and refuses a database
 * whose schema is newer than this binary knows: an older daemon must not write into a schema it
 * does not understand.
 *
 * What the schema itself guarantees, whatever the daemons do: one address per (pool, vm_id), never
 * one address twice in a pool (`unique (pool, ip)`), no allocation of a pool that does not exist
 * (triggers, v8), one elastic IP per instance, and bitmap pages of exactly 512 bytes.
 */
import type { Sql, TransactionSql } from "postgres";
import { SchemaTooNewError } from "./errors.ts";

interface Migration {
  readonly version: number;
  readonly statements: readonly string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE pools (
         name text PRIMARY KEY,
         cidr text NOT NULL,
         fingerprint text NOT NULL)`,
      `CREATE TABLE daemons (
         id text PRIMARY KEY,
         epoch bigint NOT NULL,
         heartbeat_at timestamptz NOT NULL)`,
      `CREATE TABLE pool_pages (
         pool text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
         page integer NOT NULL CHECK (page >= 0),
         bits bytea NOT NULL CHECK (length(bits) = 512),
         owner text REFERENCES daemons (id),
         epoch bigint NOT NULL DEFAULT 0,
         PRIMARY KEY (pool, page))`,
      `CREATE TABLE pool_counts (
         pool text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
         daemon text NOT NULL,
         allocated bigint NOT NULL,
         PRIMARY KEY (pool, daemon))`,
      `CREATE TABLE allocations (
         pool text NOT NULL REFERENCES pools (name),
         vm_id text NOT NULL,
         ip bigint NOT NULL CHECK (ip BETWEEN 0 AND 4294967295),
         hostname text,
         name text,
         host text,
         nic jsonb,
         created_at timestamptz NOT NULL,
         PRIMARY KEY (pool, vm_id),
         UNIQUE (pool, ip))`,
      `CREATE TABLE pending_frees (
         pool text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
         ip bigint NOT NULL,
         PRIMARY KEY (pool, ip))`,
      `CREATE TABLE vm_names (
         pool text NOT NULL,
         name text NOT NULL,
         vm_id text NOT NULL,
         PRIMARY KEY (pool, name))`,
      `CREATE TABLE eips (
         id text PRIMARY KEY,
         project text NOT NULL,
         pool text NOT NULL,
         public_ip bigint NOT NULL CHECK (public_ip BETWEEN 0 AND 4294967295),
         state text NOT NULL CHECK (state IN ('allocated', 'associated')),
         created_at timestamptz NOT NULL,
         idempotency_key text,
         instance_id text UNIQUE,
         host text,
         private_ip bigint,
         associated_at timestamptz,
         UNIQUE (pool, public_ip),
         CHECK ((state = 'associated') = (instance_id IS NOT NULL AND host IS NOT NULL AND private_ip IS NOT NULL)))`,
      "CREATE INDEX eips_by_project ON eips (project, id)",
      `CREATE TABLE eip_idempotency (
         project text NOT NULL,
         key text NOT NULL,
         eip_id text NOT NULL,
         pool text NOT NULL,
         PRIMARY KEY (project, key))`,
      `CREATE TABLE job_leases (
         job text PRIMARY KEY,
         holder text NOT NULL,
         epoch bigint NOT NULL,
         expires_at timestamptz NOT NULL)`,
    ],
  },
  {
    // Version 2, for the store's first backend over this schema (store/postgres/store.ts):
    // - a page's `filled` flag (no free address left) is the pool summary's bit, inverted: there is
    //   no per-pool summary row for allocations to contend on;
    // - each daemon's next-fit cursor lives beside its count;
    // - the references to a pool are checked at commit, so a step may write a pool's pages before
    //   the pool row, in the order the pool logic writes them.
    version: 2,
    statements: [
      "ALTER TABLE pool_pages ADD COLUMN filled boolean NOT NULL DEFAULT false",
      "ALTER TABLE pool_counts ADD COLUMN cursor bigint NOT NULL DEFAULT 0",
      "ALTER TABLE pool_pages ALTER CONSTRAINT pool_pages_pool_fkey DEFERRABLE INITIALLY DEFERRED",
      "ALTER TABLE pool_counts ALTER CONSTRAINT pool_counts_pool_fkey DEFERRABLE INITIALLY DEFERRED",
      "ALTER TABLE allocations ALTER CONSTRAINT allocations_pool_fkey DEFERRABLE INITIALLY DEFERRED",
      "ALTER TABLE pending_frees ALTER CONSTRAINT pending_frees_pool_fkey DEFERRABLE INITIALLY DEFERRED",
    ],
  },
  {
    // Version 3, for pages held by daemons (store/postgres/pages.ts):
    // - a release clears its bit under the page's row lock, whoever holds the page, so frees are
    //   never left pending for the holder to fold in;
    // - a claim looks for a pool's pages that have a free address and no live holder.
    version: 3,
    statements: [
      "DROP TABLE pending_frees",
      "CREATE INDEX pool_pages_claimable ON pool_pages (pool, page) WHERE NOT filled",
    ],
  },
  {
    // Version 4, for transactions in fewer round trips (transaction.ts):
    // - a write of a page this daemon holds fails as a statement when the page was taken from it
    //   (SQLSTATE IPP01), rather than updating no row: a transaction's writes go out with its
    //   COMMIT without waiting for their answers, and a fenced-out write must abort it rather than
    //   let the rest of it commit;
    // - the full pages of a pool are indexed.
    version: 4,
    statements: [
      `CREATE FUNCTION ippool_put_held_page(p_pool text, p_page integer, p_bits bytea, p_owner text, p_epoch bigint)
       RETURNS void LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE pool_pages SET bits = p_bits
         WHERE pool = p_pool AND page = p_page AND owner = p_owner AND epoch = p_epoch;
         IF NOT FOUND THEN
           RAISE EXCEPTION 'page % of pool % is no longer held by % at epoch %', p_page, p_pool, p_owner, p_epoch
             USING ERRCODE = 'IPP01';
         END IF;
       END $$`,
      // Every write transaction lists a pool's full pages (its summary): an index of them, not a
      // scan of every page row.
      "CREATE INDEX pool_pages_filled ON pool_pages (pool, page) WHERE filled",
    ],
  },
  {
    // Version 5: which process holds a daemon's name (membership.ts), so that two daemons given
    // one name are told apart.
    version: 5,
    statements: ["ALTER TABLE daemons ADD COLUMN instance text"],
  },
  {
    // Version 6: a fleet daemon reads the allocations recorded on its own host (its DHCP
    // reservations, every reconcile interval), not the whole of each pool every host shares.
    version: 6,
    statements: ["CREATE INDEX allocations_host ON allocations (pool, host)"],
  },
  {
    // Version 7, for allocations committed in one statement (store/postgres/optimistic.ts):
    // - every state of a page's bits and flag has a version of its own, drawn from a sequence (a page
    //   removed and made again never repeats one), so a daemon can tell that a page it holds is
    //   still as it last read or wrote it, without locking it in between;
    // - one function commits a batch of new allocations on pages the daemon holds, each page
    //   written only if it is still held at the epoch and version the batch was planned on.
    version: 7,
    statements: [
      "CREATE SEQUENCE pool_page_versions",
      "ALTER TABLE pool_pages ADD COLUMN version bigint NOT NULL DEFAULT nextval('pool_page_versions')",
      `CREATE FUNCTION ippool_next_page_version() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.bits IS DISTINCT FROM OLD.bits OR NEW.filled IS DISTINCT FROM OLD.filled THEN
           NEW.version := nextval('pool_page_versions');
         END IF;
         RETURN NEW;
       END $$`,
      `CREATE TRIGGER pool_pages_version BEFORE UPDATE OF bits, filled ON pool_pages
       FOR EACH ROW EXECUTE FUNCTION ippool_next_page_version()`,
      // p_batch: one entry per pool, {pool, fingerprint, daemon, pages: [{page, epoch, version,
      // bits (hex), filled}], rows: [allocation rows], names: [{name, vm_id}], delta, cursor}.
      // A page no longer held at that epoch fails the statement with IPP01 (as a fenced write
      // does), one changed since that version or a pool stamped anew with IPP02; an allocation
      // row that exists fails it on the schema's constraints (23505).
      `CREATE FUNCTION ippool_commit_allocations(p_batch jsonb)
       RETURNS TABLE (pool text, page integer, version bigint) LANGUAGE plpgsql AS $$
       DECLARE
         g jsonb;
         p record;
       BEGIN
         FOR g IN SELECT * FROM jsonb_array_elements(p_batch) LOOP
           PERFORM 1 FROM pools WHERE name = g->>'pool' AND fingerprint = g->>'fingerprint';
           IF NOT FOUND THEN
             RAISE EXCEPTION 'pool % is no longer as this daemon read it', g->>'pool' USING ERRCODE = 'IPP02';
           END IF;
           FOR p IN
             SELECT * FROM jsonb_to_recordset(g->'pages') AS x(page integer, epoch bigint, version bigint, bits text, filled boolean)
             ORDER BY x.page
           LOOP
             UPDATE pool_pages AS t SET bits = decode(p.bits, 'hex'), filled = p.filled
             WHERE t.pool = g->>'pool' AND t.page = p.page AND t.owner = g->>'daemon' AND t.epoch = p.epoch
               AND t.version = p.version
             RETURNING t.pool, t.page, t.version INTO pool, page, version;
             IF NOT FOUND THEN
               IF NOT EXISTS (SELECT 1 FROM pool_pages AS t WHERE t.pool = g->>'pool' AND t.page = p.page
                                AND t.owner = g->>'daemon' AND t.epoch = p.epoch) THEN
                 RAISE EXCEPTION 'page % of pool % is no longer held by %', p.page, g->>'pool', g->>'daemon'
                   USING ERRCODE = 'IPP01';
               END IF;
               RAISE EXCEPTION 'page % of pool % changed since this daemon read it', p.page, g->>'pool'
                 USING ERRCODE = 'IPP02';
             END IF;
             RETURN NEXT;
           END LOOP;
           INSERT INTO allocations (pool, vm_id, ip, hostname, name, host, nic, created_at)
           SELECT g->>'pool', r.vm_id, r.ip, r.hostname, r.name, r.host, r.nic, to_timestamp(r.created_ms::float8 / 1000)
           FROM jsonb_to_recordset(g->'rows')
             AS r(vm_id text, ip bigint, hostname text, name text, host text, nic jsonb, created_ms bigint);
           INSERT INTO vm_names (pool, name, vm_id)
           SELECT g->>'pool', n.name, n.vm_id FROM jsonb_to_recordset(g->'names') AS n(name text, vm_id text)
           ON CONFLICT ON CONSTRAINT vm_names_pkey DO UPDATE SET vm_id = excluded.vm_id;
           INSERT INTO pool_counts (pool, daemon, allocated, cursor)
           VALUES (g->>'pool', g->>'daemon', (g->>'delta')::bigint, (g->>'cursor')::bigint)
           ON CONFLICT ON CONSTRAINT pool_counts_pkey
           DO UPDATE SET allocated = pool_counts.allocated + excluded.allocated, cursor = excluded.cursor;
         END LOOP;
       END $$`,
    ],
  },
  {
    // Version 8: no allocation locks its pool's row, and the commit function of v7 does its work in
    // fewer statements. The foreign key allocations → pools locked the
    // pool's row (FOR KEY SHARE) for every allocation row inserted: with several daemons allocating
    // in one pool, each lock a multixact on one row, a per-pool hot row. It cost PostgreSQL about
    // a fifth of its CPU per allocation (measured with three writers committing 11 rows per statement).
    // The reference is now kept by triggers, as the key kept it, with the waiting moved to the
    // rare side:
    // - a statement that inserts allocations checks, once, that their pools exist;
    // - removing a pool (a delete or a truncate) waits for every transaction inserting allocations
    //   (a SHARE lock on the table, which also holds new inserts back until it ends), then refuses
    //   if the pool has any.
    // Both read the latest committed state, which only read committed gives a statement: an insert
    // in a transaction of another isolation locks the pool's row as the key did, and a pool is
    // removed only in read committed (the daemon's connections use it whatever the database's
    // default is).
    version: 8,
    statements: [
      "ALTER TABLE allocations DROP CONSTRAINT allocations_pool_fkey",
      `CREATE FUNCTION ippool_allocations_have_pools() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE
         v_pool text;
       BEGIN
         IF current_setting('transaction_isolation') = 'read committed' THEN
           SELECT i.pool INTO v_pool FROM inserted AS i WHERE NOT EXISTS (SELECT 1 FROM pools WHERE name = i.pool) LIMIT 1;
           IF FOUND THEN
             RAISE EXCEPTION 'allocations of pool %, which does not exist', v_pool USING ERRCODE = 'foreign_key_violation';
           END IF;
           RETURN NULL;
         END IF;
         FOR v_pool IN SELECT DISTINCT pool FROM inserted LOOP
           PERFORM 1 FROM pools WHERE name = v_pool FOR KEY SHARE;
           IF NOT FOUND THEN
             RAISE EXCEPTION 'allocations of pool %, which does not exist', v_pool USING ERRCODE = 'foreign_key_violation';
           END IF;
         END LOOP;
         RETURN NULL;
       END $$`,
      `CREATE TRIGGER allocations_have_pools AFTER INSERT ON allocations
       REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ippool_allocations_have_pools()`,
      // The commit function of v7 in fewer statements, each of which PostgreSQL sets up and tears
      // down: its loops index the batch (expressions, not queries), and names are upserted only
      // where the batch has some. About 11 % less of PostgreSQL's CPU per allocation, measured as
      // above.
      `CREATE OR REPLACE FUNCTION ippool_commit_allocations(p_batch jsonb)
       RETURNS TABLE (pool text, page integer, version bigint) LANGUAGE plpgsql AS $$
       DECLARE
         g jsonb;
         p jsonb;
         v_pool text;
         v_daemon text;
       BEGIN
         FOR i IN 0 .. coalesce(jsonb_array_length(p_batch), 0) - 1 LOOP
           g := p_batch -> i;
           v_pool := g ->> 'pool';
           v_daemon := g ->> 'daemon';
           PERFORM 1 FROM pools WHERE name = v_pool AND fingerprint = g ->> 'fingerprint';
           IF NOT FOUND THEN
             RAISE EXCEPTION 'pool % is no longer as this daemon read it', v_pool USING ERRCODE = 'IPP02';
           END IF;
           FOR j IN 0 .. coalesce(jsonb_array_length(g -> 'pages'), 0) - 1 LOOP
             p := g -> 'pages' -> j;
             UPDATE pool_pages AS t SET bits = decode(p ->> 'bits', 'hex'), filled = (p ->> 'filled')::boolean
             WHERE t.pool = v_pool AND t.page = (p ->> 'page')::integer AND t.owner = v_daemon
               AND t.epoch = (p ->> 'epoch')::bigint AND t.version = (p ->> 'version')::bigint
             RETURNING t.pool, t.page, t.version INTO pool, page, version;
             IF NOT FOUND THEN
               IF NOT EXISTS (SELECT 1 FROM pool_pages AS t WHERE t.pool = v_pool AND t.page = (p ->> 'page')::integer
                                AND t.owner = v_daemon AND t.epoch = (p ->> 'epoch')::bigint) THEN
                 RAISE EXCEPTION 'page % of pool % is no longer held by %', p ->> 'page', v_pool, v_daemon
                   USING ERRCODE = 'IPP01';
               END IF;
               RAISE EXCEPTION 'page % of pool % changed since this daemon read it', p ->> 'page', v_pool
                 USING ERRCODE = 'IPP02';
             END IF;
             RETURN NEXT;
           END LOOP;
           INSERT INTO allocations (pool, vm_id, ip, hostname, name, host, nic, created_at)
           SELECT v_pool, r.vm_id, r.ip, r.hostname, r.name, r.host, r.nic, to_timestamp(r.created_ms::float8 / 1000)
           FROM jsonb_to_recordset(g -> 'rows')
             AS r(vm_id text, ip bigint, hostname text, name text, host text, nic jsonb, created_ms bigint);
           IF jsonb_array_length(g -> 'names') > 0 THEN
             INSERT INTO vm_names (pool, name, vm_id)
             SELECT v_pool, n.name, n.vm_id FROM jsonb_to_recordset(g -> 'names') AS n(name text, vm_id text)
             ON CONFLICT ON CONSTRAINT vm_names_pkey DO UPDATE SET vm_id = excluded.vm_id;
           END IF;
           INSERT INTO pool_counts (pool, daemon, allocated, cursor)
           VALUES (v_pool, v_daemon, (g ->> 'delta')::bigint, (g ->> 'cursor')::bigint)
           ON CONFLICT ON CONSTRAINT pool_counts_pkey
           DO UPDATE SET allocated = pool_counts.allocated + excluded.allocated, cursor = excluded.cursor;
         END LOOP;
       END $$`,
      `CREATE FUNCTION ippool_pool_key_kept() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'an allocation''s pool and a pool''s name are never changed' USING ERRCODE = 'foreign_key_violation';
       END $$`,
      `CREATE TRIGGER allocations_pool_kept BEFORE UPDATE OF pool ON allocations
       FOR EACH ROW WHEN (NEW.pool IS DISTINCT FROM OLD.pool) EXECUTE FUNCTION ippool_pool_key_kept()`,
      `CREATE TRIGGER pools_name_kept BEFORE UPDATE OF name ON pools
       FOR EACH ROW WHEN (NEW.name IS DISTINCT FROM OLD.name) EXECUTE FUNCTION ippool_pool_key_kept()`,
      // Before the row goes, so before the delete cascades to the pool's pages: a removal waiting
      // for the lock holds none of them, and an allocating transaction may still write one.
      `CREATE FUNCTION ippool_pool_without_allocations() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF current_setting('transaction_isolation') <> 'read committed' THEN
           RAISE EXCEPTION 'a pool is removed in a read committed transaction only' USING ERRCODE = 'invalid_transaction_state';
         END IF;
         LOCK TABLE allocations IN SHARE MODE;
         IF TG_OP = 'TRUNCATE' THEN
           IF EXISTS (SELECT 1 FROM allocations) THEN
             RAISE EXCEPTION 'pools still have allocations' USING ERRCODE = 'foreign_key_violation';
           END IF;
           RETURN NULL;
         END IF;
         IF EXISTS (SELECT 1 FROM allocations WHERE pool = OLD.name) THEN
           RAISE EXCEPTION 'pool % still has allocations', OLD.name USING ERRCODE = 'foreign_key_violation';
         END IF;
         RETURN OLD;
       END $$`,
      `CREATE TRIGGER pools_without_allocations BEFORE DELETE ON pools
       FOR EACH ROW EXECUTE FUNCTION ippool_pool_without_allocations()`,
      `CREATE TRIGGER pools_truncated_without_allocations BEFORE TRUNCATE ON pools
       FOR EACH STATEMENT EXECUTE FUNCTION ippool_pool_without_allocations()`,
    ],
  },
];

/** The schema version this binary writes and reads. */
export const SCHEMA_VERSION = (MIGRATIONS.at(-1) as Migration).version;

/** Serialises concurrent `migrate` calls (a transaction-scoped lock: it cannot outlive the transaction). */
const MIGRATE_LOCK = 0x1990_0001;

export interface Migrated {
  readonly from: number;
  readonly to: number;
}

/** Applies every migration newer than the database's version, in one transaction. */
export function migrate(sql: Sql): Promise<Migrated> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATE_LOCK})`;
    const from = await versionOf(tx);
    if (from > SCHEMA_VERSION) {
      throw new SchemaTooNewError(
        `the database's schema is version ${from}, newer than this ippool's ${SCHEMA_VERSION}: upgrade ippool first`,
      );
    }
    for (const migration of MIGRATIONS) {
      if (migration.version <= from) continue;
      for (const statement of migration.statements) await tx.unsafe(statement);
    }
    await tx`UPDATE ippool_schema SET version = ${SCHEMA_VERSION}`;
    return { from, to: SCHEMA_VERSION };
  }) as Promise<Migrated>;
}

/** The database's schema version; 0 for a database ippool has not touched (the table is made then). */
async function versionOf(tx: TransactionSql): Promise<number> {
  await tx`CREATE TABLE IF NOT EXISTS ippool_schema (version integer NOT NULL)`;
  const rows = await tx<{ version: number }[]>`SELECT version FROM ippool_schema`;
  if (rows.length > 0) return (rows[0] as { version: number }).version;
  await tx`INSERT INTO ippool_schema (version) VALUES (0)`;
  return 0;
}
