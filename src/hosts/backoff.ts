/**
 * Reconnect delays: the first is `initialMs`, each failed attempt doubles the next up to `maxMs`,
 * and a successful connection starts over. A host that blips is back quickly; one that is down for
 * long is tried every `maxMs` instead of hammered.
 */
export class Backoff {
  private nextMs: number;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {
    this.nextMs = initialMs;
  }

  /** The delay the next attempt will wait (for log lines; `take` does not change it). */
  get upcomingMs(): number {
    return this.nextMs;
  }

  /** The delay before the next attempt; the one after it is twice as long, up to the maximum. */
  take(): number {
    const delay = this.nextMs;
    this.nextMs = Math.min(delay * 2, this.maxMs);
    return delay;
  }

  /** After a successful connection: the next failure is retried after `initialMs` again. */
  reset(): void {
    this.nextMs = this.initialMs;
  }
}
