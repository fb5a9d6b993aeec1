/**
 * A step's writes as statements, sent in its transaction in the order the step made them without
 * waiting for their answers (transaction.ts: the COMMIT confirms them all). Each write succeeds or
 * fails as a statement: a fenced page write that finds the page taken raises an error in the
 * database (schema.ts, v4). The schema's constraints have the last word: an insert that would give
 * an address or an instance a second holder fails (unique violation), and the store runs the step
 * again (store.ts).
 */
import type { JSONValue, PendingQuery, TransactionSql } from "postgres";
import { PAGE_BYTES } from "../../pool/bitmap.ts";
import type { AllocationRecord } from "../../pool/store.ts";
import { PAGE_TAKEN_STATE, PageTakenError } from "./pages.ts";
import type { Send } from "./transaction.ts";
import type { Write } from "./view.ts";

const EMPTY_PAGE = Buffer.alloc(PAGE_BYTES);

export function sendWrites(tx: TransactionSql, send: Send, writes: readonly Write[], daemon: string): void {
  for (const write of grouped(coalesced(writes))) {
    for (const statement of statementsOf(tx, write, daemon)) {
      send(
        write.kind === "putPage"
          ? statement.catch((error: unknown) => Promise.reject(pageTaken(write, error)))
          : statement,
      );
    }
  }
}

/** The database's refusal of a fenced page write, as the error the store acts on. */
function pageTaken(write: Extract<Write, { kind: "putPage" }>, error: unknown): unknown {
  return (error as { code?: unknown }).code === PAGE_TAKEN_STATE ? new PageTakenError(write.pool, write.index) : error;
}

/**
 * The writes without those a later one makes moot: a page put again, and a pool's count changes
 * (summed into the first), until a page or pool is removed. A bulk step (many allocations in one
 * transaction, or a batch of steps) then writes each page and count once.
 */
function coalesced(writes: readonly Write[]): Write[] {
  const kept: Write[] = [];
  const at = new Map<string, number>();
  for (const write of writes) {
    if (write.kind === "removePage" || write.kind === "removePool") at.clear();
    const key =
      write.kind === "putPage"
        ? `page\0${write.pool}\0${write.index}`
        : write.kind === "counts"
          ? `counts\0${write.pool}`
          : undefined;
    const earlier = key === undefined ? undefined : at.get(key);
    if (earlier === undefined) {
      if (key !== undefined) at.set(key, kept.length);
      kept.push(write);
      continue;
    }
    const previous = kept[earlier] as Write;
    kept[earlier] =
      previous.kind === "counts" && write.kind === "counts" ? { ...write, delta: previous.delta + write.delta } : write;
  }
  return kept;
}

/** New allocation rows of one pool, inserted by one statement. */
interface InsertAllocations {
  readonly kind: "insertAllocations";
  readonly pool: string;
  readonly rows: { readonly vmId: string; readonly record: AllocationRecord }[];
}

/** Writes that may be sent before an insert of allocation rows made after them. */
const PASSED_BY_INSERTS: ReadonlySet<Write["kind"]> = new Set([
  "putName",
  "removeName",
  "putPage",
  "setFull",
  "counts",
]);

/**
 * The writes with a pool's new allocation rows inserted together, at the first one's place (a
 * batch of allocations: one statement, not one per VM). An insert moves ahead only of writes to
 * other tables; a removed or changed allocation ends the group, since an insert after it may take
 * the address it freed.
 */
function grouped(writes: readonly Write[]): (Write | InsertAllocations)[] {
  const kept: (Write | InsertAllocations)[] = [];
  const open = new Map<string, InsertAllocations>();
  for (const write of writes) {
    if (write.kind === "putAllocation" && !write.exists) {
      const group = open.get(write.pool);
      if (group) group.rows.push({ vmId: write.vmId, record: write.record });
      else {
        const opened = {
          kind: "insertAllocations" as const,
          pool: write.pool,
          rows: [{ vmId: write.vmId, record: write.record }],
        };
        open.set(write.pool, opened);
        kept.push(opened);
      }
      continue;
    }
    if (!PASSED_BY_INSERTS.has(write.kind)) open.clear();
    kept.push(write);
  }
  return kept;
}

/**
 * A new allocation as a row of `jsonb_to_recordset(…) AS r(vm_id text, ip bigint, hostname text,
 * name text, host text, nic jsonb, created_ms bigint)`: many rows go in one statement.
 */
export function allocationRow(vmId: string, record: AllocationRecord) {
  return {
    vm_id: vmId,
    ip: record.ip,
    hostname: record.hostname ?? null,
    name: record.name ?? null,
    host: record.host ?? null,
    nic: record.nic ?? null,
    created_ms: record.createdAt,
  };
}

/** A page's words as the bytes of its `bits` column (a view, not a copy). */
export function pageBytes(words: Uint32Array): Buffer {
  return Buffer.from(words.buffer, words.byteOffset, words.byteLength);
}

type Statement = PendingQuery<readonly object[]>;

function statementsOf(tx: TransactionSql, write: Write | InsertAllocations, daemon: string): Statement[] {
  switch (write.kind) {
    case "insertAllocations": {
      const rows = write.rows.map(({ vmId, record }) => ({ pool: write.pool, ...allocationRow(vmId, record) }));
      return [
        tx`INSERT INTO allocations (pool, vm_id, ip, hostname, name, host, nic, created_at)
           SELECT pool, vm_id, ip, hostname, name, host, nic, to_timestamp(created_ms::float8 / 1000)
           FROM jsonb_to_recordset(${tx.json(rows as unknown as JSONValue)}::jsonb)
             AS r(pool text, vm_id text, ip bigint, hostname text, name text, host text, nic jsonb, created_ms bigint)`,
      ];
    }
    case "putStamp": {
      const { pool, stamp, pageCount } = write;
      return [
        tx`INSERT INTO pools (name, cidr, fingerprint) VALUES (${pool}, ${stamp.cidr}, ${stamp.fingerprint})
           ON CONFLICT (name) DO UPDATE SET cidr = excluded.cidr, fingerprint = excluded.fingerprint`,
        // Every page has its row from the start: a row can be locked, a missing one cannot. Pages
        // the summary already spoke of have theirs; any other has no free address (all reserved).
        tx`INSERT INTO pool_pages (pool, page, bits, filled)
           SELECT ${pool}, page, ${EMPTY_PAGE}, true FROM generate_series(0, ${pageCount - 1}::int) AS page
           ON CONFLICT (pool, page) DO NOTHING`,
      ];
    }
    case "removePool":
      // Pages, counts and pending frees go with it (ON DELETE CASCADE); names have no reference.
      return [tx`DELETE FROM pools WHERE name = ${write.pool}`, tx`DELETE FROM vm_names WHERE pool = ${write.pool}`];
    case "counts":
      return [
        tx`INSERT INTO pool_counts (pool, daemon, allocated, cursor)
           VALUES (${write.pool}, ${daemon}, ${write.delta}, ${write.cursor})
           ON CONFLICT (pool, daemon)
           DO UPDATE SET allocated = pool_counts.allocated + ${write.delta}, cursor = excluded.cursor`,
      ];
    case "setFull":
      return [
        tx`INSERT INTO pool_pages (pool, page, bits, filled) VALUES (${write.pool}, ${write.index}, ${EMPTY_PAGE}, ${write.full})
           ON CONFLICT (pool, page) DO UPDATE SET filled = excluded.filled`,
      ];
    case "putPage": {
      const bits = pageBytes(write.bits);
      if (write.fence !== undefined) {
        // Fenced (pages.ts): the page as this daemon claimed it, or an error.
        return [tx`SELECT ippool_put_held_page(${write.pool}, ${write.index}, ${bits}, ${daemon}, ${write.fence})`];
      }
      return [
        tx`INSERT INTO pool_pages (pool, page, bits, filled) VALUES (${write.pool}, ${write.index}, ${bits}, false)
           ON CONFLICT (pool, page) DO UPDATE SET bits = excluded.bits`,
      ];
    }
    case "removePage":
      return [tx`DELETE FROM pool_pages WHERE pool = ${write.pool} AND page = ${write.index}`];
    case "putAllocation": {
      // New rows go as insertAllocations (grouped): this is an update of a row the step locked.
      const { pool, vmId, record } = write;
      // An object: the driver encodes it for the jsonb parameter (a string would be stored as one).
      const nic = record.nic === undefined ? null : tx.json(record.nic as unknown as JSONValue);
      return [
        tx`UPDATE allocations SET ip = ${record.ip}, hostname = ${record.hostname ?? null}, name = ${record.name ?? null},
             host = ${record.host ?? null}, nic = ${nic}::jsonb, created_at = to_timestamp(${record.createdAt}::float8 / 1000)
           WHERE pool = ${pool} AND vm_id = ${vmId}`,
      ];
    }
    case "removeAllocation":
      return [tx`DELETE FROM allocations WHERE pool = ${write.pool} AND vm_id = ${write.vmId}`];
    case "putName":
      return [
        tx`INSERT INTO vm_names (pool, name, vm_id) VALUES (${write.pool}, ${write.name}, ${write.vmId})
           ON CONFLICT (pool, name) DO UPDATE SET vm_id = excluded.vm_id`,
      ];
    case "removeName":
      return [tx`DELETE FROM vm_names WHERE pool = ${write.pool} AND name = ${write.name}`];
    case "putEip": {
      const eip = write.record;
      const columns = {
        id: eip.id,
        project: eip.project,
        pool: eip.pool,
        public_ip: eip.publicIp,
        state: eip.state,
        idempotency_key: eip.idempotencyKey ?? null,
        instance_id: eip.instanceId ?? null,
        host: eip.host ?? null,
        private_ip: eip.privateIp ?? null,
      };
      const createdAt = tx`to_timestamp(${eip.createdAt}::float8 / 1000)`;
      const associatedAt = tx`to_timestamp(${eip.associatedAt ?? null}::float8 / 1000)`;
      if (!write.exists) {
        return [
          tx`INSERT INTO eips (id, project, pool, public_ip, state, idempotency_key, instance_id, host, private_ip,
                               created_at, associated_at)
             VALUES (${columns.id}, ${columns.project}, ${columns.pool}, ${columns.public_ip}, ${columns.state},
                     ${columns.idempotency_key}, ${columns.instance_id}, ${columns.host}, ${columns.private_ip},
                     ${createdAt}, ${associatedAt})`,
        ];
      }
      return [
        tx`UPDATE eips SET ${tx(columns)}, created_at = ${createdAt}, associated_at = ${associatedAt}
           WHERE id = ${eip.id}`,
      ];
    }
    case "removeEip":
      return [tx`DELETE FROM eips WHERE id = ${write.id}`];
    case "putIdempotency": {
      const { project, key, record } = write;
      if (!write.exists) {
        return [
          tx`INSERT INTO eip_idempotency (project, key, eip_id, pool)
             VALUES (${project}, ${key}, ${record.id}, ${record.pool})`,
        ];
      }
      return [
        tx`UPDATE eip_idempotency SET eip_id = ${record.id}, pool = ${record.pool}
           WHERE project = ${project} AND key = ${key}`,
      ];
    }
    case "removeIdempotency":
      return [tx`DELETE FROM eip_idempotency WHERE project = ${write.project} AND key = ${write.key}`];
  }
}
