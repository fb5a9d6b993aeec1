/**
 * Consistency check of the elastic IP records against their public pools and indexes: every EIP
 * holds exactly its address in its pool's bitmap (checkPool covers the bitmap itself), every
 * allocation in a public pool belongs to an EIP, and the project, state, instance and
 * idempotency indexes name records that exist and agree with them. Read-only.
 */
import { formatIpv4 } from "../net/ipv4.ts";
import { checkPool, type PoolReport } from "../pool/fsck.ts";
import type { PoolLayout } from "../pool/layout.ts";
import type { PoolStore } from "../pool/store.ts";
import { eipPoolKey } from "./service.ts";
import type { EipRecord, EipStore, IdempotencyRecord } from "./store.ts";

/** The raw index entries fsck walks; the service never needs them whole. */
export interface EipIndexReader {
  projectIndex(): Iterable<{ project: string; id: string }>;
  stateIndex(): Iterable<{ pool: string; project: string; state: string; id: string }>;
  instanceIndex(): Iterable<{ instanceId: string; id: string }>;
  idempotencyIndex(): Iterable<{ project: string; key: string; record: IdempotencyRecord }>;
}

type Store = PoolStore & EipStore;

/**
 * One report per public pool (keyed by its configured name) plus one for the indexes, which span
 * pools. `layouts` maps configured names to layouts named by their store keys. `indexes` are the
 * embedded store's index entries; the shared store has none apart from its rows (an EIP's
 * instance and state are its own columns), so they are checked where given.
 */
export function checkEips(
  store: Store,
  layouts: ReadonlyMap<string, PoolLayout>,
  indexes?: EipIndexReader,
): PoolReport[] {
  const eips = new Map(Array.from(store.allEips(), (record): [string, EipRecord] => [record.id, record]));
  const reports = [...layouts].map(([name, layout]) => {
    const { allocations, problems } = checkPool(store, layout);
    for (const record of eips.values()) if (record.pool === name) checkRecord(store, record, problems);
    for (const { vmId, record } of store.allocationEntries(layout.name)) {
      if (eips.get(vmId)?.pool !== name)
        problems.push(`${formatIpv4(record.ip)}: allocated to ${vmId}, not an EIP of it`);
    }
    return { pool: `elastic IPs ${name}`, allocations, problems };
  });
  const problems: string[] = [];
  for (const record of eips.values()) {
    if (!layouts.has(record.pool)) problems.push(`${record.id}: pool ${record.pool} is not configured`);
  }
  if (indexes !== undefined) checkIndexes(indexes, eips, problems);
  reports.push({ pool: "elastic IP indexes", allocations: eips.size, problems });
  return reports;
}

function checkRecord(store: Store, record: EipRecord, problems: string[]): void {
  const ip = formatIpv4(record.publicIp);
  const held = store.getAllocation(eipPoolKey(record.pool), record.id);
  if (held?.ip !== record.publicIp) problems.push(`${record.id}: ${ip} is not allocated to it in its pool`);
  if (record.state === "associated") {
    if (record.instanceId === undefined || record.privateIp === undefined || record.host === undefined)
      problems.push(`${record.id}: associated without instance, host or private address`);
    else if (store.eipOfInstance(record.instanceId) !== record.id)
      problems.push(`${record.id}: instance index of ${record.instanceId} does not name it`);
  } else if (record.instanceId !== undefined) {
    problems.push(`${record.id}: ${record.state} but names instance ${record.instanceId}`);
  }
  if (record.idempotencyKey !== undefined) {
    const replay = store.getIdempotency(record.project, record.idempotencyKey);
    if (replay?.id !== record.id) problems.push(`${record.id}: its idempotency key names ${replay?.id ?? "nothing"}`);
  }
}

function checkIndexes(store: EipIndexReader, eips: ReadonlyMap<string, EipRecord>, problems: string[]): void {
  let projectEntries = 0;
  for (const { project, id } of store.projectIndex()) {
    projectEntries++;
    if (eips.get(id)?.project !== project) problems.push(`project index ${project}/${id} names no such EIP`);
  }
  let stateEntries = 0;
  for (const { pool, project, state, id } of store.stateIndex()) {
    stateEntries++;
    const eip = eips.get(id);
    if (eip?.pool !== pool || eip.project !== project || eip.state !== state)
      problems.push(`state index ${pool}/${project}/${state}/${id} disagrees with the record`);
  }
  for (const [name, entries] of [
    ["project", projectEntries],
    ["state", stateEntries],
  ] as const) {
    if (entries !== eips.size) problems.push(`${name} index has ${entries} entries for ${eips.size} EIPs`);
  }
  for (const { instanceId, id } of store.instanceIndex()) {
    const eip = eips.get(id);
    if (eip?.state !== "associated" || eip.instanceId !== instanceId)
      problems.push(`instance index ${instanceId} names ${id}, which is not associated with it`);
  }
  for (const { project, key, record } of store.idempotencyIndex()) {
    const eip = eips.get(record.id);
    if (eip?.project !== project || eip.idempotencyKey !== key || eip.pool !== record.pool)
      problems.push(`idempotency key ${project}/${JSON.stringify(key)} names ${record.id}, which does not carry it`);
  }
}
