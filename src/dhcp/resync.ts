/**
 * Fleet mode: any daemon may allocate or release a VM of this host (through its TCP API), but only
 * this host's daemon can write the reservation its dnsmasq reads. So every interval this daemon
 * brings its host's reservation files in line with the store, as it does at its start; a run
 * that fails (the database out of reach) is logged and tried again at the next.
 */
import type { Logger } from "../log/logger.ts";

export class ReservationResync {
  private timer: ReturnType<typeof setInterval> | undefined;
  private running = false;

  /** `inFleet`: with one daemon (the embedded store) nobody else changes its VMs, and it never runs. */
  constructor(
    private readonly inFleet: boolean,
    private readonly sync: () => Promise<void>,
    private readonly logger: Logger,
  ) {}

  /** Runs every `intervalS` seconds from now on (0: never); a reload changes it. */
  start(intervalS: number): void {
    this.stop();
    if (!this.inFleet || intervalS <= 0) return;
    this.timer = setInterval(() => void this.runOnce(), intervalS * 1000);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async runOnce(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await this.sync();
    } catch (error) {
      this.logger.warn("DHCP reservations not brought in line with the store; tried again next interval", {
        error: (error as Error).message,
      });
    } finally {
      this.running = false;
    }
  }
}
