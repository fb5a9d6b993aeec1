/**
 * Faults for load runs against the testbed (test/hosts/flap-load.test.ts, bench/flap.ts): one host
 * that keeps going away and coming back, and a slow trickle of EIP changes on it.
 */
import type { Testbed } from "./testbed.ts";

/**
 * How the host goes away: `link` is `hostDown`/`hostUp` (sshd killed and eth0 down: the daemon's
 * connection drops and its reconnects time out), `sshd` is `stopSshd`/`startSshd` (the host stays
 * on the network: reconnects are refused at once).
 */
export type FlapMode = "link" | "sshd";
export const FLAP_MODES: readonly FlapMode[] = ["link", "sshd"];

export interface FlapTransition {
  /** Milliseconds from the start of flapping. */
  readonly at: number;
  readonly to: "down" | "up";
  /** How long the testbed took to make the change (starting sshd waits until it listens). */
  readonly ms: number;
}

/** Takes the host down or brings it back up, the way `mode` says. */
export function takeHost(bed: Testbed, host: string, mode: FlapMode, to: "down" | "up"): Promise<void> {
  if (mode === "link") return to === "down" ? bed.hostDown(host) : bed.hostUp(host);
  return to === "down" ? bed.stopSshd(host) : bed.startSshd(host);
}

/** Sleeps for a loop that runs until stopped: once `end()` is called, no sleep waits any more. */
class Pause {
  private stopped = false;
  private wake: (() => void) | null = null;

  get ended(): boolean {
    return this.stopped;
  }

  sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, ms));
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  end(): void {
    this.stopped = true;
    this.wake?.();
  }
}

/** Takes `host` down at once, then up, down, … every `periodMs` until `stop()`, which leaves it up. */
export class Flapper {
  readonly transitions: FlapTransition[] = [];
  private readonly pause = new Pause();
  private readonly started = performance.now();
  private readonly done: Promise<void>;

  constructor(
    private readonly bed: Testbed,
    readonly host: string,
    readonly mode: FlapMode,
    readonly periodMs: number,
  ) {
    this.done = this.loop();
  }

  /** Stops flapping; resolves once the host is up again (rejects if a testbed change failed). */
  async stop(): Promise<readonly FlapTransition[]> {
    this.pause.end();
    await this.done;
    return this.transitions;
  }

  private async loop(): Promise<void> {
    let down = false;
    while (!this.pause.ended) {
      const began = performance.now();
      await this.change(down ? "up" : "down");
      down = !down;
      await this.pause.sleep(this.periodMs - (performance.now() - began));
    }
    if (down) await this.change("up");
  }

  private async change(to: "down" | "up"): Promise<void> {
    const began = performance.now();
    await takeHost(this.bed, this.host, this.mode, to);
    this.transitions.push({ at: began - this.started, to, ms: performance.now() - began });
  }
}

/** An answer from the daemon's EIP API. */
export interface EipAnswer {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: only `code` is read from error bodies
  readonly body: any;
}

/**
 * Associates one EIP with one instance and disassociates it again, one request every `periodMs`
 * until `stop()`: EIP changes that touch a flapping host while the pool API is under load. Every
 * answer is counted by operation, status and error code (`associate 502 HOST_UNAVAILABLE`).
 */
export class EipTrickle {
  readonly outcomes = new Map<string, number>();
  private associated = false;
  private readonly pause = new Pause();
  private readonly done: Promise<void>;

  constructor(
    private readonly call: (method: string, path: string, body?: unknown) => Promise<EipAnswer>,
    private readonly eipId: string,
    private readonly instanceId: string,
    private readonly periodMs: number,
  ) {
    this.done = this.loop();
  }

  /** Stops after the request in flight; resolves with the outcomes. */
  async stop(): Promise<ReadonlyMap<string, number>> {
    this.pause.end();
    await this.done;
    return this.outcomes;
  }

  private async loop(): Promise<void> {
    while (!this.pause.ended) {
      const began = performance.now();
      const operation = this.associated ? "disassociate" : "associate";
      const outcome = await this.call(
        "POST",
        `/elastic-ips/${this.eipId}/${operation}`,
        operation === "associate" ? { instance_id: this.instanceId } : undefined,
      ).then(
        (answer) => {
          if (answer.status === 200) this.associated = operation === "associate";
          return `${answer.status}${answer.status === 200 ? "" : ` ${answer.body?.code}`}`;
        },
        (error: Error) => `request failed: ${error.message}`,
      );
      const key = `${operation} ${outcome}`;
      this.outcomes.set(key, (this.outcomes.get(key) ?? 0) + 1);
      await this.pause.sleep(this.periodMs - (performance.now() - began));
    }
  }
}
