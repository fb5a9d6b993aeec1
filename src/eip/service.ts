/**
 * Elastic IPs: public addresses a project allocates, keeps, associates with an instance and
 * releases. Addresses come from the public pools through the same bitmap allocator as VM
 * addresses (the EIP id takes the place of the vm_id). Every call is scoped to one project.
 */
import { randomUUID } from "node:crypto";
import type { ProjectDefinition } from "../config/config.ts";
import { fail, type Outcome, unwrap } from "../outcome.ts";
import { allocateInTransaction as allocateAddress, releaseInTransaction } from "../pool/allocator.ts";
import { PoolNotFoundError } from "../pool/errors.ts";
import { failureReason, NO_POOL_EVENTS, type PoolEvents } from "../pool/events.ts";
import { type PoolDefinition, PoolLayout } from "../pool/layout.ts";
import { type PoolUsage, poolUsage } from "../pool/service.ts";
import type { StepStore, StoreView } from "../store/steps.ts";
import { EipNotFoundError, IdempotencyMismatchError, QuotaExceededError, StillAssociatedError } from "./errors.ts";
import type { EipRecord, EipState, EipStore } from "./store.ts";

/** Store key of a public pool: EIP pools live beside VM pools, under names VM pools cannot take. */
export function eipPoolKey(name: string): string {
  return `eip:${name}`;
}

/** Layouts of the configured public pools by configured name; each layout is named by its store key. */
export function publicPoolLayouts(definitions: readonly PoolDefinition[]): Map<string, PoolLayout> {
  return new Map(
    definitions.map((definition) => [
      definition.name,
      new PoolLayout({ ...definition, name: eipPoolKey(definition.name) }),
    ]),
  );
}

export interface EipAllocateRequest {
  readonly pool?: string;
  readonly idempotencyKey?: string;
}

export interface EipFilter {
  readonly state?: EipState;
  readonly instanceId?: string;
}

export interface EipAllocated {
  readonly eip: EipRecord;
  /** False when an idempotency key replayed an earlier allocation. */
  readonly created: boolean;
}

export class EipService {
  private readonly byName: Map<string, PoolLayout>;

  constructor(
    private readonly store: StepStore,
    /** Public pools by their configured name; each layout's own name is its store key. */
    pools: ReadonlyMap<string, PoolLayout>,
    private readonly defaultPool: string | null,
    private readonly events: PoolEvents = NO_POOL_EVENTS,
  ) {
    this.byName = new Map(pools);
  }

  async allocate(project: ProjectDefinition, request: EipAllocateRequest): Promise<EipAllocated> {
    const pool = request.pool ?? this.defaultPool;
    if (pool === null) throw new PoolNotFoundError("no elastic IP pool is configured");
    const layout = this.layout(pool);
    const id = `eip-${randomUUID()}`;
    let outcome: Outcome<EipAllocated>;
    try {
      outcome = await this.store.write((view) =>
        allocateEip(view, { project, pool, layout, id, idempotencyKey: request.idempotencyKey }),
      );
    } catch (error) {
      this.events.allocationFailed(pool, "eip", failureReason(error));
      throw error;
    }
    if (!outcome.ok) this.events.allocationFailed(pool, "eip", failureReason(outcome.error));
    else if (outcome.value.created) this.events.allocated(pool, "eip");
    return unwrap(outcome);
  }

  /** Every public pool's addresses by state (read at each metrics scrape). */
  usage(): Promise<PoolUsage[]> {
    return this.store.read((view) => [...this.byName].map(([name, layout]) => poolUsage(view, layout, "eip", name)));
  }

  async list(project: ProjectDefinition, filter: EipFilter = {}): Promise<EipRecord[]> {
    const records = await this.store.read((view) => eipsOfProject(view, project, filter));
    return records.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
  }

  get(project: ProjectDefinition, id: string): Promise<EipRecord> {
    return this.store.read((view) => ownedEip(view, project, id));
  }

  async release(project: ProjectDefinition, id: string): Promise<EipRecord> {
    const released = unwrap(
      await this.store.write((view): Outcome<EipRecord> => {
        const record = view.getEip(id);
        if (!record || record.project !== project.name) return fail(notFound(id));
        if (record.state === "associated") {
          return fail(new StillAssociatedError(`${id} is associated with ${record.instanceId}; disassociate it first`));
        }
        releaseInTransaction(view, this.layout(record.pool), id);
        view.removeEip(record);
        if (record.idempotencyKey !== undefined) view.removeIdempotency(project.name, record.idempotencyKey);
        return { ok: true, value: record };
      }),
    );
    this.events.released(released.pool, "eip");
    return released;
  }

  private layout(pool: string): PoolLayout {
    const layout = this.byName.get(pool);
    if (!layout) throw new PoolNotFoundError(`elastic IP pool ${JSON.stringify(pool)} is not configured`);
    return layout;
  }
}

/** The project's EIPs that pass the filter, in no particular order. */
function eipsOfProject(view: EipStore, project: ProjectDefinition, filter: EipFilter): EipRecord[] {
  const records: EipRecord[] = [];
  for (const id of view.eipIdsOfProject(project.name)) {
    const record = view.getEip(id);
    if (!record) continue;
    if (filter.state !== undefined && record.state !== filter.state) continue;
    if (filter.instanceId !== undefined && record.instanceId !== filter.instanceId) continue;
    records.push(record);
  }
  return records;
}

interface EipAllocation {
  readonly project: ProjectDefinition;
  readonly pool: string;
  readonly layout: PoolLayout;
  readonly id: string;
  readonly idempotencyKey: string | undefined;
}

/** Allocates (or replays by idempotency key) one EIP, within a write step. */
function allocateEip(view: StoreView, request: EipAllocation): Outcome<EipAllocated> {
  const { project, pool, layout, id, idempotencyKey } = request;
  if (idempotencyKey !== undefined) {
    const prior = view.getIdempotency(project.name, idempotencyKey);
    if (prior) {
      if (prior.pool !== pool) {
        return fail(
          new IdempotencyMismatchError(
            `idempotency key ${JSON.stringify(idempotencyKey)} was used for pool ${prior.pool}, not ${pool}`,
          ),
        );
      }
      const eip = view.getEip(prior.id);
      if (eip) return { ok: true, value: { eip, created: false } };
    }
  }
  const held = view.countEipsOfProject(project.name);
  if (held >= project.quota) {
    return fail(new QuotaExceededError(`project ${project.name} holds ${held} of its ${project.quota} elastic IPs`));
  }
  const placed = allocateAddress(view, layout, { vmId: id });
  if (!placed.ok) return placed;
  const eip: EipRecord = {
    id,
    project: project.name,
    pool,
    publicIp: placed.value.allocation.ip,
    state: "allocated",
    createdAt: placed.value.allocation.createdAt,
    ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
  };
  view.putEip(eip);
  if (idempotencyKey !== undefined) view.putIdempotency(project.name, idempotencyKey, { id, pool });
  return { ok: true, value: { eip, created: true } };
}

/** The project's EIP; missing and someone else's answer alike, so existence does not leak. */
export function ownedEip(store: EipStore, project: ProjectDefinition, id: string): EipRecord {
  const record = store.getEip(id);
  if (!record || record.project !== project.name) throw notFound(id);
  return record;
}

function notFound(id: string): EipNotFoundError {
  return new EipNotFoundError(`no elastic IP ${id}`);
}
