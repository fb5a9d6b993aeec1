/**
 * A step's writes as statements, run in its transaction in the order the step made them, sent
 * one after another without waiting for each answer (the connection keeps their order). The
 * schema's constraints have the last word: an insert that would give an address or an instance a
 * second holder fails (unique violation), and the store runs the step again (store.ts).
 */
import type { PendingQuery, TransactionSql } from "postgres";
import { PAGE_BYTES } from "../../pool/bitmap.ts";
import type { Write } from "./view.ts";

const EMPTY_PAGE = Buffer.alloc(PAGE_BYTES);

export async function applyWrites(tx: TransactionSql, writes: readonly Write[], daemon: string): Promise<void> {
  const statements = coalesced(writes).flatMap((write) => statementsOf(tx, write, daemon));
  for (const statement of statements) statement.execute();
  await Promise.all(statements);
}

/**
 * The writes without those a later one makes moot: a page put again, and a pool's count changes
 * (summed into the first), until a page or pool is removed. A bulk step (many allocations in one
 * transaction) then writes each page and count once.
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

type Statement = PendingQuery<readonly object[]>;

function statementsOf(tx: TransactionSql, write: Write, daemon: string): Statement[] {
  switch (write.kind) {
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
      const bits = Buffer.from(write.bits.buffer, write.bits.byteOffset, write.bits.byteLength);
      return [
        tx`INSERT INTO pool_pages (pool, page, bits, filled) VALUES (${write.pool}, ${write.index}, ${bits}, false)
           ON CONFLICT (pool, page) DO UPDATE SET bits = excluded.bits`,
      ];
    }
    case "removePage":
      return [tx`DELETE FROM pool_pages WHERE pool = ${write.pool} AND page = ${write.index}`];
    case "putAllocation": {
      const { pool, vmId, record } = write;
      const nic = record.nic === undefined ? null : JSON.stringify(record.nic);
      const createdAt = tx`to_timestamp(${record.createdAt}::float8 / 1000)`;
      if (!write.exists) {
        return [
          tx`INSERT INTO allocations (pool, vm_id, ip, hostname, name, host, nic, created_at)
             VALUES (${pool}, ${vmId}, ${record.ip}, ${record.hostname ?? null}, ${record.name ?? null},
                     ${record.host ?? null}, ${nic}::jsonb, ${createdAt})`,
        ];
      }
      return [
        tx`UPDATE allocations SET ip = ${record.ip}, hostname = ${record.hostname ?? null}, name = ${record.name ?? null},
             host = ${record.host ?? null}, nic = ${nic}::jsonb, created_at = ${createdAt}
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
