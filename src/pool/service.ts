/**
 * The private address pools as a service: allocate, release, look up, list and count. It owns
 * which pool a request goes to; the allocator owns how an address is chosen; the store owns
 * durability. No HTTP here.
 */
import { type Nic, type PoolLink, sameLink } from "../dhcp/link.ts";
import { InvalidIpError } from "../net/errors.ts";
import { formatIpv4, isIpv4, parseIpv4 } from "../net/ipv4.ts";
import { type Outcome, unwrap } from "../outcome.ts";
import type { JobLease, StepStore } from "../store/steps.ts";
import {
  type Allocated,
  type AllocateRequest,
  type Allocation,
  allocateInTransaction,
  releaseInTransaction,
} from "./allocator.ts";
import { type AddressDelivery, NO_DELIVERY } from "./delivery.ts";
import { type AddressDependents, NO_ADDRESS_DEPENDENTS } from "./dependents.ts";
import {
  AllocationNotFoundError,
  DeliveryFailedError,
  ORIGINAL_MESSAGES,
  PoolNotFoundError,
  VmOnOtherHostError,
} from "./errors.ts";
import { failureReason, NO_POOL_EVENTS, type PoolEvents, type PoolKind } from "./events.ts";
import type { PoolLayout } from "./layout.ts";
import type { AllocationRecord, PoolStore } from "./store.ts";

export interface PoolStats {
  readonly pool: string;
  readonly network: string;
  readonly gateway: string | null;
  readonly total: number;
  readonly allocated: number;
  readonly available: number;
  /** Percent of usable addresses allocated. */
  readonly usage: number;
}

/** A pool's addresses by state, from its layout and stored counter: nothing is scanned. */
export interface PoolUsage {
  /** The configured name (for EIP pools, not the store key). */
  readonly pool: string;
  readonly kind: PoolKind;
  /** Addresses that can be handed out (the stats' `total`). */
  readonly usable: number;
  readonly allocated: number;
  readonly available: number;
  /** Addresses never handed out: network, broadcast, gateway and reservations (not part of `usable`). */
  readonly reserved: number;
}

/** Usage of one pool (a read step); `name` is the configured name when the layout's own name is a store key. */
export function poolUsage(view: PoolStore, layout: PoolLayout, kind: PoolKind, name = layout.name): PoolUsage {
  const allocated = view.getCounters(layout.name)?.allocated ?? 0;
  return {
    pool: name,
    kind,
    usable: layout.usableCount,
    allocated,
    available: Math.max(0, layout.usableCount - allocated),
    reserved: layout.cidr.size - layout.usableCount,
  };
}

export interface ListQuery {
  readonly pool?: string;
  /** Continue after this address (exclusive). */
  readonly after?: string;
  readonly limit?: number;
}

export interface ListPage {
  readonly items: Allocation[];
  /** The address to pass as `after` for the next page, when there is one. */
  readonly next?: string;
}

export interface ReleaseOptions {
  /** The host reporting the release: if the VM's recorded host is another, nothing is released. */
  readonly fromHost?: string;
}

export class PoolService {
  private readonly byName: Map<string, PoolLayout>;
  private dependents: AddressDependents = NO_ADDRESS_DEPENDENTS;
  private delivery: AddressDelivery = NO_DELIVERY;
  private links: readonly PoolLink[] = [];

  constructor(
    private readonly store: StepStore,
    readonly layouts: readonly PoolLayout[],
    readonly defaultPool: string,
    private readonly events: PoolEvents = NO_POOL_EVENTS,
  ) {
    this.byName = new Map(layouts.map((layout) => [layout.name, layout]));
  }

  /** Who must let go of an address before it is freed (the EIP service, wired after both exist). */
  setAddressDependents(dependents: AddressDependents): void {
    this.dependents = dependents;
  }

  /** How addresses reach VMs on the links the pools serve (DHCP reservations). */
  setDelivery(delivery: AddressDelivery, links: readonly PoolLink[]): void {
    this.delivery = delivery;
    this.links = links;
  }

  layout(name: string = this.defaultPool): PoolLayout {
    const layout = this.byName.get(name);
    if (!layout) throw new PoolNotFoundError(`pool ${JSON.stringify(name)} is not configured`);
    return layout;
  }

  /**
   * Allocates (or repeats) in the named pool; without one, in the pool serving one of the VM's
   * `nics`, else the default pool. The first NIC on a link of that pool gets the address by DHCP.
   * With `adopt` (a VM that was running before ippool knew it), a new allocation takes the address
   * that NIC has leased now, if the pool has it free, so the guest keeps it.
   */
  async allocate(
    request: AllocateRequest & { readonly pool?: string; readonly nics?: readonly Nic[]; readonly adopt?: boolean },
  ): Promise<Allocated> {
    const { nics = [], pool, adopt, ...rest } = request;
    const layout = this.layout(pool ?? this.poolServing(nics));
    const nic = nics.find((candidate) => this.serves(layout, candidate));
    const leased = adopt && nic ? this.delivery.currentAddress(nic) : undefined;
    const allocating = {
      ...rest,
      ...(nic === undefined ? {} : { nic }),
      ...(leased === undefined ? {} : { preferredIp: leased }),
    };
    let outcome: Outcome<Allocated>;
    try {
      outcome = await this.store.write((view) => allocateInTransaction(view, layout, allocating));
    } catch (error) {
      this.events.allocationFailed(layout.name, "vm", failureReason(error));
      throw error;
    }
    if (!outcome.ok) this.events.allocationFailed(layout.name, "vm", failureReason(outcome.error));
    else if (outcome.value.created) this.events.allocated(layout.name, "vm");
    const allocated = unwrap(outcome);
    if (allocated.allocation.nic !== undefined || allocated.previous?.nic !== undefined) {
      await this.deliver(allocated.allocation, allocated.previous);
    }
    return allocated;
  }

  private async deliver(allocation: Allocation, previous: Allocation | undefined): Promise<void> {
    try {
      await this.delivery.deliver(allocation, previous);
    } catch (error) {
      throw new DeliveryFailedError(
        `${formatIpv4(allocation.ip)} is allocated to ${allocation.vmId} but its DHCP reservation could not be written (${(error as Error).message}); ask again once that is fixed`,
      );
    }
  }

  private poolServing(nics: readonly Nic[]): string | undefined {
    for (const nic of nics) {
      const link = this.links.find((candidate) => sameLink(candidate, nic.link));
      if (link) return link.pool;
    }
    return undefined;
  }

  private serves(layout: PoolLayout, nic: Nic): boolean {
    return this.links.some((link) => link.pool === layout.name && sameLink(link, nic.link));
  }

  /**
   * Releases the VM's address in one pool, or in every pool when none is named. `vmIdOrName` is
   * its vm_id or its name. With `fromHost`, a VM recorded on another host keeps its address.
   */
  async release(vmIdOrName: string, pool?: string, options: ReleaseOptions = {}): Promise<Allocation[]> {
    const layouts = pool === undefined ? this.layouts : [this.layout(pool)];
    const held = await this.store.read((view) =>
      layouts.flatMap(
        (layout) => allocationOf(view, layout, vmIdOrName) ?? allocationNamed(view, layout, vmIdOrName) ?? [],
      ),
    );
    if (held.length === 0) throw new AllocationNotFoundError(ORIGINAL_MESSAGES.notFound);
    const { fromHost } = options;
    const elsewhere = held.find((allocation) => fromHost !== undefined && !onHost(allocation, fromHost));
    if (elsewhere) {
      throw new VmOnOtherHostError(
        `vm ${elsewhere.vmId} runs on ${elsewhere.host}, not ${fromHost}: its address is kept (a migrated VM's old host releasing)`,
      );
    }
    const released = await this.releaseHeld(held, (record) => fromHost === undefined || onHost(record, fromHost));
    if (released.length === 0) throw new AllocationNotFoundError(ORIGINAL_MESSAGES.notFound);
    return released;
  }

  /**
   * Releases each of these allocations only if its record is still the one given (same address,
   * same creation time): one that was released, or released and allocated again, meanwhile is
   * left alone. One transaction; answers what was released.
   */
  releaseUnchanged(allocations: readonly Allocation[], lease?: JobLease): Promise<Allocation[]> {
    return this.releaseHeld(allocations, () => true, lease);
  }

  /** An address that is not a dotted quad, or in no pool, is `Invalid IP address` (400), as in the original. */
  async releaseByIp(ipText: string): Promise<Allocation> {
    const ip = isIpv4(ipText) ? parseIpv4(ipText) : undefined;
    const layout = ip === undefined ? undefined : this.layouts.find((l) => l.contains(ip));
    if (ip === undefined || !layout) throw new InvalidIpError(ORIGINAL_MESSAGES.invalidIp);
    const held = await this.store.read((view) => {
      const vmId = view.vmAt(layout.name, ip);
      return vmId === undefined ? undefined : allocationOf(view, layout, vmId);
    });
    const [released] = held ? await this.releaseHeld([held], () => true) : [];
    if (!released) throw new AllocationNotFoundError(ORIGINAL_MESSAGES.notFound);
    return released;
  }

  /**
   * Releases allocations read before: once their VMs' dependents (EIPs) are detached, in one
   * transaction, each only if its record is unchanged and `still` holds for it; for a singleton
   * job (`lease`), none unless the job still holds its lease.
   */
  private async releaseHeld(
    allocations: readonly Allocation[],
    still: (record: AllocationRecord) => boolean,
    lease?: JobLease,
  ): Promise<Allocation[]> {
    if (allocations.length === 0) return [];
    const vmIds = [...new Set(allocations.map((allocation) => allocation.vmId))];
    const released = await this.dependents.releasing(vmIds, () =>
      this.store.write((view) =>
        lease !== undefined && !view.holdsJob(lease.job, lease.epoch)
          ? []
          : allocations.flatMap((expected) => {
              const layout = this.byName.get(expected.pool);
              const record = layout && view.getAllocation(layout.name, expected.vmId);
              if (!layout || !record || record.ip !== expected.ip || record.createdAt !== expected.createdAt) return [];
              if (!still(record)) return [];
              return releaseInTransaction(view, layout, expected.vmId, record) ?? [];
            }),
      ),
    );
    for (const allocation of released) {
      this.events.released(allocation.pool, "vm");
      if (allocation.nic !== undefined) await this.delivery.withdraw(allocation);
    }
    return released;
  }

  /** The vm's allocation in the named pool, or in the first pool (default first) that has one. */
  async get(vmId: string, pool?: string): Promise<Allocation> {
    const found = await this.find(vmId, pool);
    if (!found) throw new AllocationNotFoundError(ORIGINAL_MESSAGES.notFound);
    return found;
  }

  /** By vm_id in every pool (default first), then by name: a name never hides another VM's vm_id. */
  find(vmIdOrName: string, pool?: string): Promise<Allocation | undefined> {
    const layouts = pool === undefined ? this.searchOrder() : [this.layout(pool)];
    return this.store.read((view) => {
      for (const lookup of [allocationOf, allocationNamed]) {
        for (const layout of layouts) {
          const found = lookup(view, layout, vmIdOrName);
          if (found) return found;
        }
      }
      return undefined;
    });
  }

  /** Allocations in pool order then address order; a bounded page when `limit` is given. */
  list(query: ListQuery): Promise<ListPage> {
    let layouts = query.pool === undefined ? [...this.layouts] : [this.layout(query.pool)];
    let from: number | undefined;
    if (query.after !== undefined) {
      const after = parseIpv4(query.after);
      const containing = layouts.findIndex((layout) => layout.contains(after));
      if (containing < 0) throw new InvalidIpError(`after=${query.after} is not in ${query.pool ?? "any pool"}`);
      layouts = layouts.slice(containing);
      from = after + 1;
    }
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    return this.store.read((view) => listPage(view, layouts, from, limit));
  }

  async stats(pool?: string): Promise<PoolStats> {
    const layout = this.layout(pool);
    const { usable, allocated, available } = await this.store.read((view) => poolUsage(view, layout, "vm"));
    return {
      pool: layout.name,
      network: layout.network,
      gateway: layout.gatewayText,
      total: usable,
      allocated,
      available,
      usage: usable === 0 ? 0 : (allocated / usable) * 100,
    };
  }

  /**
   * Every allocation of one pool, or of every pool, in pool then vm_id order. Reads every record:
   * not for request paths that must stay cheap.
   */
  allocations(pool?: string): Promise<Allocation[]> {
    const layouts = pool === undefined ? this.layouts : [this.layout(pool)];
    return this.store.read((view) =>
      layouts.flatMap((layout) =>
        Array.from(view.allocationEntries(layout.name), ({ vmId, record }) => ({ pool: layout.name, vmId, ...record })),
      ),
    );
  }

  /** Every pool's addresses by state (read at each metrics scrape). */
  usage(): Promise<PoolUsage[]> {
    return this.store.read((view) => this.layouts.map((layout) => poolUsage(view, layout, "vm")));
  }

  private searchOrder(): PoolLayout[] {
    const first = this.layout();
    return [first, ...this.layouts.filter((l) => l !== first)];
  }
}

/** One page of `list`: from address `from` of the first layout (its start when undefined) on. */
function listPage(view: PoolStore, layouts: readonly PoolLayout[], start: number | undefined, limit: number): ListPage {
  let from = start;
  const items: Allocation[] = [];
  for (const layout of layouts) {
    const first = from ?? layout.cidr.base;
    from = undefined;
    const last = layout.cidr.base + layout.cidr.size - 1;
    // One more than asked, to know whether another page follows.
    const want = limit === Number.POSITIVE_INFINITY ? undefined : limit + 1 - items.length;
    for (const { ip, vmId } of view.addresses(layout.name, first, last, want)) {
      const record = view.getAllocation(layout.name, vmId);
      if (record) items.push({ pool: layout.name, vmId, ...record, ip });
    }
    if (items.length > limit) break;
  }
  if (items.length <= limit) return { items };
  items.length = limit;
  return { items, next: formatIpv4((items.at(-1) as Allocation).ip) };
}

function allocationOf(view: PoolStore, layout: PoolLayout, vmId: string): Allocation | undefined {
  const record = view.getAllocation(layout.name, vmId);
  return record && { pool: layout.name, vmId, ...record };
}

/** The allocation of the VM that carries `name` in this pool. */
function allocationNamed(view: PoolStore, layout: PoolLayout, name: string): Allocation | undefined {
  const vmId = view.vmNamed(layout.name, name);
  return vmId === undefined ? undefined : allocationOf(view, layout, vmId);
}

/** A VM with no recorded host is taken to be on whichever host reports it. */
function onHost(record: AllocationRecord, host: string): boolean {
  return record.host === undefined || record.host === host;
}
