/**
 * Leak detection: allocations whose VM no configured hypervisor host has. A VM's address is
 * normally released by the libvirt hook when the VM stops; a hook that failed, a host rebuilt or a
 * domain undefined behind ippool's back leaves the allocation behind. This compares every
 * allocation's vm_id with every host's libvirt domains (by name and by UUID) and reports, or
 * releases, those no host has and that are older than the grace period.
 *
 * The rules, kept in `decideLeaks` (pure):
 * - Every configured host is asked, whatever host an allocation records: a VM may have migrated.
 * - If any host cannot be asked (down, unreachable, virsh failed), nothing is a leak: a VM on that
 *   host would look leaked. The check is refused (`LeakCheckIncompleteError`), naming the hosts.
 * - With no hosts configured there is nothing to compare against: no leaks, and a reason.
 * - An allocation younger than the grace period is never a leak (a VM being created may be
 *   allocated before libvirt lists it); age is the check's start minus the allocation's creation.
 *
 * No HTTP here, and no SSH: the hosts are reached through `DomainDirectory`.
 */
import type { Logger } from "../log/logger.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import type { JobLease, StepStore } from "../store/steps.ts";
import type { Allocation } from "./allocator.ts";
import { LeakCheckIncompleteError } from "./errors.ts";
import { type LeakEvents, NO_LEAK_EVENTS } from "./events.ts";
import type { PoolService } from "./service.ts";

/** A libvirt domain as a host lists it. */
export interface Domain {
  readonly name: string;
  readonly uuid: string;
}

/** What the leak check asks of the hypervisor hosts. */
export interface DomainDirectory {
  /** The configured hosts' names. */
  hostNames(): readonly string[];
  /** Every domain the host defines, running or not; throws when the host cannot be asked. */
  listDomains(host: string): Promise<readonly Domain[]>;
}

/** One host's answer: its domains, or why it could not be asked. */
export type HostAnswer =
  | { readonly host: string; readonly ok: true; readonly domains: readonly Domain[] }
  | { readonly host: string; readonly ok: false; readonly error: string };

export interface Leak {
  readonly allocation: Allocation;
  /** Milliseconds from the allocation's creation to the check. */
  readonly ageMs: number;
}

export type LeakDecision =
  | { readonly kind: "no-hosts" }
  | { readonly kind: "incomplete"; readonly unavailable: readonly { readonly host: string; readonly error: string }[] }
  | { readonly kind: "complete"; readonly leaks: readonly Leak[] };

const UUID_FORM = /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/;

/** A UUID in one spelling (lower case, no dashes), or null when `text` is not a UUID. */
function uuidKey(text: string): string | null {
  return UUID_FORM.test(text) ? text.replaceAll("-", "").toLowerCase() : null;
}

/**
 * Which allocations are leaks, given every host's answer: those at least `gracePeriodMs` old
 * (at `now`) whose vm_id is neither the name (exactly) nor the UUID (in any case, with or
 * without dashes) of a domain on any host. Refuses to decide when a host did not answer.
 */
export function decideLeaks(
  allocations: Iterable<Allocation>,
  answers: readonly HostAnswer[],
  gracePeriodMs: number,
  now: number,
): LeakDecision {
  if (answers.length === 0) return { kind: "no-hosts" };
  const unavailable = answers.flatMap((answer) => (answer.ok ? [] : [{ host: answer.host, error: answer.error }]));
  if (unavailable.length > 0) return { kind: "incomplete", unavailable };
  const names = new Set<string>();
  const uuids = new Set<string>();
  for (const answer of answers) {
    if (!answer.ok) continue;
    for (const domain of answer.domains) {
      names.add(domain.name);
      const key = uuidKey(domain.uuid);
      if (key !== null) uuids.add(key);
    }
  }
  const leaks: Leak[] = [];
  for (const allocation of allocations) {
    const ageMs = now - allocation.createdAt;
    if (ageMs < gracePeriodMs) continue;
    if (names.has(allocation.vmId)) continue;
    const key = uuidKey(allocation.vmId);
    if (key !== null && uuids.has(key)) continue;
    leaks.push({ allocation, ageMs });
  }
  return { kind: "complete", leaks };
}

export interface LeakReport {
  /** When the check started (ms since the epoch); ages are counted to it. */
  readonly checkedAt: number;
  readonly gracePeriodS: number;
  /** The hosts asked, with how many domains each listed. */
  readonly hosts: readonly { readonly host: string; readonly domains: number }[];
  readonly leaks: readonly Leak[];
  /** Why nothing could be compared (no hosts configured). */
  readonly reason?: string;
  /** Present when the check released: the leaks actually released (one changed meanwhile is skipped). */
  readonly released?: readonly Allocation[];
}

export type LeakLogger = Pick<Logger, "info" | "warn">;

/** The periodic collection's lease in a fleet (store/steps.ts). */
export const LEAK_COLLECTION_JOB = "leak-collection";

export const NO_HOSTS_REASON = "no hypervisor hosts are configured: there is nothing to compare allocations against";

export class LeakDetector {
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly pools: PoolService,
    private readonly hosts: DomainDirectory,
    /** A reload may change it; a check under way keeps the value it started with. */
    public gracePeriodS: number,
    private readonly options: {
      events?: LeakEvents;
      logger?: LeakLogger;
      now?: () => number;
      /**
       * Fleet mode: the periodic collection releases only allocations recorded on a host this
       * daemon lists. Another daemon's host, unknown here, cannot be asked; its VMs would all
       * look leaked.
       */
      collectOwnHostsOnly?: boolean;
      /** Where the periodic collection takes its lease: one daemon of a fleet collects at a time. */
      jobs?: Pick<StepStore, "acquireJob">;
    } = {},
  ) {}

  /**
   * Finds the leaked allocations of one pool (or all) and releases nothing. Throws
   * `LeakCheckIncompleteError` if a host cannot be asked, `PoolNotFoundError` for an unknown pool.
   */
  check(pool?: string): Promise<LeakReport> {
    return this.run(false, pool);
  }

  /** `check`, then releases what it found; when the check is refused, nothing is released. */
  release(pool?: string): Promise<LeakReport> {
    return this.run(true, pool);
  }

  /**
   * The periodic collection: reports every leak (the gauge counts them all, as a check does) and
   * releases those a hypervisor host reported (with a `host`: a libvirt hook's), never one made for
   * something else through the API. This is how an undefined domain's address is released:
   * libvirt has no undefine hook. In fleet mode, only those of a host this daemon lists.
   */
  collect(lease?: JobLease): Promise<LeakReport> {
    const listed = new Set(this.hosts.hostNames());
    return this.run(
      true,
      undefined,
      (allocation) =>
        allocation.host !== undefined && (!this.options.collectOwnHostsOnly || listed.has(allocation.host)),
      lease,
    );
  }

  /**
   * One periodic collection, holding the collection's lease for `leaseS` seconds (renewed by each
   * run): undefined when another daemon holds it. Its releases are made only while the lease is
   * still this daemon's, checked in their transaction.
   */
  async collectAlone(leaseS: number): Promise<LeakReport | undefined> {
    const { jobs } = this.options;
    if (jobs === undefined) return this.collect();
    const epoch = await jobs.acquireJob(LEAK_COLLECTION_JOB, leaseS);
    return epoch === undefined ? undefined : this.collect({ job: LEAK_COLLECTION_JOB, epoch });
  }

  /**
   * Calls `collect` every `intervalS` seconds from now on (0: never; a later call replaces the
   * interval); a refused or failed run is logged and retried next time.
   */
  start(intervalS: number): void {
    this.stop();
    if (intervalS <= 0) return;
    this.timer = setInterval(() => {
      // The lease outlasts two periods: a holder that missed one run keeps it.
      this.collectAlone(2 * intervalS).catch((error) =>
        this.options.logger?.warn("leak collection did not run", { error: (error as Error).message }),
      );
    }, intervalS * 1000);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async run(
    release: boolean,
    pool: string | undefined,
    releasable: (allocation: Allocation) => boolean = () => true,
    lease?: JobLease,
  ): Promise<LeakReport> {
    const events = this.options.events ?? NO_LEAK_EVENTS;
    const checkedAt = (this.options.now ?? Date.now)();
    const { gracePeriodS } = this;
    const pools = pool === undefined ? this.pools.layouts.map((layout) => layout.name) : [this.pools.layout(pool).name];
    // Allocations first, then the hosts: a VM whose allocation is in this snapshot and that
    // exists is listed by its host; an allocation made later is not judged at all.
    const allocations = await this.pools.allocations(pool);
    const answers = await Promise.all(this.hosts.hostNames().map((host) => this.ask(host)));
    const decision = decideLeaks(allocations, answers, gracePeriodS * 1000, checkedAt);
    const base = {
      checkedAt,
      gracePeriodS,
      hosts: answers.map((answer) => ({ host: answer.host, domains: answer.ok ? answer.domains.length : 0 })),
    };
    if (decision.kind === "incomplete") {
      const why = decision.unavailable.map(({ host, error }) =>
        error.startsWith(`host ${host}`) ? error : `host ${host}: ${error}`,
      );
      this.options.logger?.warn("leak check incomplete", { hosts: decision.unavailable.map((u) => u.host).join(",") });
      throw new LeakCheckIncompleteError(
        `leak check incomplete: ${decision.unavailable.length === 1 ? "a host" : "hosts"} could not be asked, so nothing is reported or released: ${why.join("; ")}`,
      );
    }
    if (decision.kind === "no-hosts") {
      events.checked(pools, new Map());
      return { ...base, leaks: [], reason: NO_HOSTS_REASON, ...(release ? { released: [] } : {}) };
    }
    const leaks = decision.leaks;
    events.checked(pools, countByPool(leaks.map((leak) => leak.allocation)));
    if (!release) return { ...base, leaks };
    const chosen = leaks.map((leak) => leak.allocation).filter(releasable);
    const released = chosen.length === 0 ? [] : await this.pools.releaseUnchanged(chosen, lease);
    for (const [pool, count] of countByPool(released)) events.released(pool, count);
    for (const allocation of released) {
      this.options.logger?.info("released leaked allocation", {
        pool: allocation.pool,
        vm_id: allocation.vmId,
        ip: formatIpv4(allocation.ip),
        host: allocation.host,
        age_s: Math.floor((checkedAt - allocation.createdAt) / 1000),
      });
    }
    return { ...base, leaks, released };
  }

  private async ask(host: string): Promise<HostAnswer> {
    try {
      return { host, ok: true, domains: await this.hosts.listDomains(host) };
    } catch (error) {
      return { host, ok: false, error: (error as Error).message ?? String(error) };
    }
  }
}

function countByPool(allocations: readonly Allocation[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { pool } of allocations) counts.set(pool, (counts.get(pool) ?? 0) + 1);
  return counts;
}
