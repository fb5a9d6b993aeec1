/**
 * Reconciliation: a host's ippool rules are made exactly what the records say, in one
 * transaction on the host. Runs when a host's connection comes up (start and every reconnect)
 * and periodically. A host that rebooted gets its rules back; an association left behind while
 * a host was down is removed; rules ippool does not own are never touched (the NAT driver only
 * manages its own table and the EIP addresses).
 */
import type { Logger } from "../log/logger.ts";
import { NO_RECONCILIATION_EVENTS, type ReconciliationEvents } from "./events.ts";
import type { Association, HostGateway } from "./hosts.ts";
import type { KeyedLocks } from "./locks.ts";
import type { EipStore } from "./store.ts";

export class EipReconciler {
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly store: EipStore,
    private readonly hosts: HostGateway,
    private readonly locks: KeyedLocks,
    private readonly logger: Logger,
    private readonly events: ReconciliationEvents = NO_RECONCILIATION_EVENTS,
  ) {}

  /** Reconciles each host as it connects, and all of them every `intervalS` seconds (0: never). */
  start(intervalS: number): void {
    this.hosts.onConnect((host) => void this.reconcileHost(host));
    if (intervalS > 0) {
      this.timer = setInterval(() => void this.reconcileAll(), intervalS * 1000);
      this.timer.unref?.();
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async reconcileAll(): Promise<void> {
    await Promise.all(this.hosts.hostNames().map((host) => this.reconcileHost(host)));
  }

  /** Converges one host; failures are logged (the next connect or period tries again). */
  async reconcileHost(host: string): Promise<void> {
    try {
      const result = await this.locks.run([`host:${host}`], async () => {
        const started = performance.now();
        const converged = await this.hosts.converge(host, this.desired(host));
        this.events.succeeded(host, (performance.now() - started) / 1000, converged);
        return converged;
      });
      const drift = result.added + result.removed + result.changed;
      const log = drift > 0 ? this.logger.warn.bind(this.logger) : this.logger.debug.bind(this.logger);
      log("reconciled host", { host, added: result.added, removed: result.removed, changed: result.changed });
    } catch (error) {
      this.events.failed(host);
      this.logger.warn("reconciliation failed", { host, error: (error as Error).message });
    }
  }

  private desired(host: string): Association[] {
    const desired: Association[] = [];
    for (const eip of this.store.allEips()) {
      if (eip.state === "associated" && eip.host === host && eip.privateIp !== undefined) {
        desired.push({ eip: eip.publicIp, privateIp: eip.privateIp });
      }
    }
    return desired;
  }
}
