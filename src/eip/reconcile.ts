/**
 * Reconciliation: a host's ippool rules are made exactly what the records say, in one
 * transaction on the host. Runs when a host's connection comes up (start and every reconnect)
 * and periodically. A host that rebooted gets its rules back; an association left behind while
 * a host was down is removed; rules ippool does not own are never touched (the NAT driver only
 * manages its own table and the EIP addresses). An EIP taken off a host is announced again from
 * the host its record names.
 */
import type { Logger } from "../log/logger.ts";
import type { StepStore } from "../store/steps.ts";
import { BackgroundWork } from "./background.ts";
import { NO_RECONCILIATION_EVENTS, type ReconciliationEvents } from "./events.ts";
import type { HostGateway, HostMapping } from "./hosts.ts";
import type { EipLocks } from "./locks.ts";
import type { EipStore } from "./store.ts";

export class EipReconciler {
  private timer: ReturnType<typeof setInterval> | undefined;
  /** The run under way for each host, and the hosts asked for again meanwhile. */
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly background = new BackgroundWork();

  constructor(
    private readonly store: StepStore,
    private readonly hosts: HostGateway,
    private readonly locks: EipLocks,
    private readonly logger: Logger,
    private readonly events: ReconciliationEvents = NO_RECONCILIATION_EVENTS,
  ) {}

  /** Reconciles each host as it connects, and all of them every `intervalS` seconds (0: never). */
  start(intervalS: number): void {
    this.hosts.onConnect((host) => this.background.track(this.reconcileHost(host)));
    this.schedule(intervalS);
  }

  /** Runs all hosts every `intervalS` seconds from now on (0: never); a reload changes it. */
  schedule(intervalS: number): void {
    clearInterval(this.timer);
    this.timer = undefined;
    if (intervalS > 0) {
      this.timer = setInterval(() => void this.reconcileAll(), intervalS * 1000);
      this.timer.unref?.();
    }
  }

  /** Resolves once the runs started by connections and the re-announcements they started have ended. */
  settled(): Promise<void> {
    return this.background.settled();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async reconcileAll(): Promise<void> {
    await Promise.all(this.hosts.hostNames().map((host) => this.reconcileHost(host)));
  }

  /**
   * Converges one host; failures are logged (the next connect or period tries again). Calls while
   * a run for the host is under way coalesce into one more run after it: a slow or hung host
   * must not pile up runs that each wait a command timeout, holding its lock ahead of requests.
   */
  reconcileHost(host: string): Promise<void> {
    const running = this.running.get(host);
    if (running) {
      this.again.add(host);
      return running;
    }
    const run = (async () => {
      try {
        do {
          this.again.delete(host);
          await this.reconcileOnce(host);
        } while (this.again.has(host));
      } finally {
        this.running.delete(host); // in the same step as the last check: no call falls in between
      }
    })();
    this.running.set(host, run);
    return run;
  }

  private async reconcileOnce(host: string): Promise<void> {
    try {
      const result = await this.locks.run([`host:${host}`], async () => {
        const started = performance.now();
        const converged = await this.hosts.converge(host, await this.store.read((view) => desired(view, host)));
        this.events.succeeded(host, (performance.now() - started) / 1000, converged);
        return converged;
      });
      const drift = result.added + result.removed + result.changed;
      const log = drift > 0 ? this.logger.warn.bind(this.logger) : this.logger.debug.bind(this.logger);
      log("reconciled host", { host, added: result.added, removed: result.removed, changed: result.changed });
      for (const eip of result.removedEips) {
        this.background.track(
          this.reannounce(host, eip).catch((error: Error) =>
            this.logger.warn("announcing a moved EIP failed", { host, error: error.message }),
          ),
        );
      }
    } catch (error) {
      this.events.failed(host);
      this.logger.warn("reconciliation failed", { host, error: (error as Error).message });
    }
  }

  /**
   * An EIP found on a host its record does not name may have been announced from there (a move
   * applied on the host but not recorded: a crash, a failed write), so the network may still send
   * its traffic there until the neighbour entry expires. If the EIP is associated elsewhere, it is
   * announced again from there, holding its EIP and host locks so a move under way cannot be
   * overtaken by a stale announcement.
   */
  private async reannounce(from: string, publicIp: number): Promise<void> {
    const holder = await this.store.read((view) =>
      Array.from(view.allEips()).find((e) => e.publicIp === publicIp && e.state === "associated"),
    );
    if (holder?.host === undefined || holder.host === from) return;
    const { id, host } = holder;
    await this.locks.run([`eip:${id}`, `host:${host}`], async () => {
      const now = await this.store.read((view) => view.getEip(id));
      if (now?.state === "associated" && now.host === host && now.publicIp === publicIp) {
        this.hosts.announce(host, publicIp);
      }
    });
  }
}

/** The address pairs the records say `host` should carry. */
function desired(view: EipStore, host: string): HostMapping[] {
  const mappings: HostMapping[] = [];
  for (const eip of view.allEips()) {
    if (eip.state === "associated" && eip.host === host && eip.privateIp !== undefined) {
      mappings.push({ eip: eip.publicIp, privateIp: eip.privateIp });
    }
  }
  return mappings;
}
