/**
 * The connection half of an `SshConnection`: one ssh2 client that connects in the background,
 * refuses any host key but the pinned one, and reconnects with exponential backoff when an attempt
 * fails or the connection drops. It runs no commands; `exec-channels.ts` does, on `client`.
 */
import { Client } from "ssh2";
import { Backoff } from "./backoff.ts";
import { HostKeyMismatchError, HostUnavailableError } from "./errors.ts";
import { hostKeyFingerprint } from "./fingerprint.ts";
import { callListener, type HostLogger } from "./host-logger.ts";

export interface ReconnectingClientOptions {
  /** The host's name in the config; every message names it. */
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  readonly privateKey: Buffer;
  /** The pinned host key fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it. */
  readonly hostKey: string;
  /** Handshake deadline (TCP connect included). */
  readonly connectTimeoutMs: number;
  /** SSH keepalive interval; a connection is dropped after `keepaliveCountMax` unanswered ones. */
  readonly keepaliveIntervalMs?: number;
  readonly keepaliveCountMax?: number;
  /** First reconnect delay; doubles on every failed attempt up to `backoffMaxMs`, reset on success. */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  readonly logger?: HostLogger;
}

/**
 * idle: never started. connecting: an attempt is under way. connected: authenticated. waiting: a
 * reconnect is scheduled. closed: `close()` was called, nothing happens any more.
 */
type State = "idle" | "connecting" | "connected" | "waiting" | "closed";

const DEFAULTS = {
  keepaliveIntervalMs: 5000,
  keepaliveCountMax: 3,
  backoffInitialMs: 250,
  backoffMaxMs: 30_000,
};

export class ReconnectingClient {
  readonly name: string;
  private state: State = "idle";
  private current: Client | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly backoff: Backoff;
  private error: Error | null = null;
  /** The last failure logged, so a host that stays down is logged once, not at every attempt. */
  private loggedError = "";
  /** Set by the host key check of the current attempt: ssh2 only reports "handshake failed". */
  private mismatch: HostKeyMismatchError | null = null;
  private readonly connectListeners = new Set<() => void>();
  private readonly disconnectListeners = new Set<(error: Error | null) => void>();
  private readonly keepalive: { intervalMs: number; countMax: number };
  /**
   * While the first attempt after `start()` is under way: settles with it. A command issued then
   * (a request right after the daemon started) waits for it instead of failing "still connecting".
   */
  private firstAttempt: { settled: Promise<void>; settle: () => void } | null = null;

  /**
   * `lost` is told first whenever the connection goes (dropped, failed or closed), before any
   * listener: the commands running on it fail with that error.
   */
  constructor(
    private readonly options: ReconnectingClientOptions,
    private readonly lost: (error: HostUnavailableError) => void,
  ) {
    this.name = options.name;
    this.keepalive = {
      intervalMs: options.keepaliveIntervalMs ?? DEFAULTS.keepaliveIntervalMs,
      countMax: options.keepaliveCountMax ?? DEFAULTS.keepaliveCountMax,
    };
    this.backoff = new Backoff(
      options.backoffInitialMs ?? DEFAULTS.backoffInitialMs,
      options.backoffMaxMs ?? DEFAULTS.backoffMaxMs,
    );
  }

  /** True while an authenticated connection is open. */
  get connected(): boolean {
    return this.state === "connected";
  }

  /** The ssh2 client of the open connection or of the attempt under way; null between attempts. */
  get client(): Client | null {
    return this.current;
  }

  /** True during the first connection attempt after `start()`, which commands wait for. */
  get startingUp(): boolean {
    return this.firstAttempt !== null;
  }

  /** Why the last connection attempt failed or the connection dropped; null while connected. */
  get lastError(): Error | null {
    return this.error;
  }

  /** Starts connecting in the background (idempotent). Never throws; failures are retried. */
  start(): void {
    if (this.state !== "idle") return;
    let settle = () => {};
    const settled = new Promise<void>((resolve) => {
      settle = resolve;
    });
    this.firstAttempt = { settled, settle };
    this.connectNow();
  }

  /** Waits at most `ms` for the first attempt after `start()` to succeed or fail (never rejects). */
  firstAttemptWithin(ms: number): Promise<void> {
    return this.firstAttempt ? settledWithin(this.firstAttempt.settled, ms) : Promise.resolve();
  }

  /** Calls `listener` on every successful (re)connection. Returns a function that unsubscribes. */
  onConnect(listener: () => void): () => void {
    this.connectListeners.add(listener);
    return () => this.connectListeners.delete(listener);
  }

  /** Calls `listener` when an open connection drops (with the error, if one was reported). */
  onDisconnect(listener: (error: Error | null) => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  /** Resolves once connected; rejects with `HostUnavailableError` (or the key mismatch) after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    this.start();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(this.unavailable(`not connected after ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onConnect(() => {
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }

  /**
   * The error for something that needs the connection while there is none: the key mismatch itself
   * when that is why, otherwise `HostUnavailableError` naming the last failure.
   */
  unavailable(what: string): HostUnavailableError {
    if (this.error instanceof HostKeyMismatchError) return this.error;
    const why = this.error ? `: ${this.error.message}` : this.state === "connecting" ? ": still connecting" : "";
    return new HostUnavailableError(`host ${this.name}: ${what}${why}`);
  }

  /** Closes the connection for good: no reconnect; running commands fail with HostUnavailableError. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.state = "closed";
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.lost(new HostUnavailableError(`host ${this.name}: connection closed`));
    this.endFirstAttempt();
    const client = this.current;
    this.current = null;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      client.end();
    });
  }

  private connectNow(): void {
    if (this.state === "closed") return;
    this.timer = null;
    this.state = "connecting";
    this.mismatch = null;
    const client = new Client();
    this.current = client;
    let ready = false;
    let lastError: Error | null = null;
    client.on("ready", () => {
      if (this.current !== client || this.state === "closed") return void client.end();
      ready = true;
      this.state = "connected";
      this.error = null;
      this.loggedError = "";
      this.backoff.reset();
      this.options.logger?.info("host connected", {
        host: this.name,
        address: `${this.options.address}:${this.options.port}`,
      });
      for (const listener of [...this.connectListeners]) this.notify(() => listener());
      this.endFirstAttempt();
    });
    client.on("error", (error: Error) => {
      lastError = error;
    });
    client.on("close", () => {
      if (this.current !== client) return;
      this.current = null;
      const reason = this.mismatch ?? describeError(this.name, lastError, ready);
      this.error = reason;
      const cause = this.mismatch ? this.mismatch.message : (lastError?.message ?? "closed by the other side");
      this.lost(new HostUnavailableError(`host ${this.name}: connection dropped: ${cause}`));
      this.endFirstAttempt();
      if (this.state === "closed") return;
      if (ready) {
        this.options.logger?.warn("host disconnected", { host: this.name, error: reason.message });
        for (const listener of [...this.disconnectListeners]) this.notify(() => listener(reason));
      } else if (reason.message !== this.loggedError) {
        this.loggedError = reason.message;
        const level = reason instanceof HostKeyMismatchError ? "warn" : "info";
        this.options.logger?.[level]("host connection failed", {
          host: this.name,
          error: reason.message,
          retry_ms: this.backoff.upcomingMs,
        });
      }
      this.scheduleReconnect();
    });
    try {
      client.connect({
        host: this.options.address,
        port: this.options.port,
        username: this.options.user,
        privateKey: this.options.privateKey,
        readyTimeout: this.options.connectTimeoutMs,
        keepaliveInterval: this.keepalive.intervalMs,
        keepaliveCountMax: this.keepalive.countMax,
        hostVerifier: (key: Buffer) => this.verifyHostKey(key),
      });
    } catch (error) {
      // Bad options (e.g. an unparsable key) throw synchronously: handled like a failed attempt,
      // through the "close" handler above (which retries with backoff).
      lastError = error as Error;
      client.emit("close");
    }
  }

  private endFirstAttempt(): void {
    this.firstAttempt?.settle();
    this.firstAttempt = null;
  }

  /** Runs during key exchange, before authentication: an impostor never sees the client's key. */
  private verifyHostKey(key: Buffer): boolean {
    const presented = hostKeyFingerprint(key);
    if (presented === this.options.hostKey) return true;
    this.mismatch = new HostKeyMismatchError(
      `host ${this.name} (${this.options.address}:${this.options.port}) presented host key ${presented}, ` +
        `not the pinned ${this.options.hostKey}: connection refused`,
    );
    return false;
  }

  private scheduleReconnect(): void {
    const delay = this.backoff.take();
    this.state = "waiting";
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  private notify(call: () => void): void {
    callListener(this.options.logger, this.name, call);
  }
}

/** Waits for `promise` at most `ms` (never rejects). */
function settledWithin(promise: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([promise, elapsed]).finally(() => clearTimeout(timer));
}

function describeError(name: string, error: Error | null, wasReady: boolean): HostUnavailableError {
  if (!error) return new HostUnavailableError(`host ${name}: ${wasReady ? "connection closed" : "connection failed"}`);
  const code = (error as NodeJS.ErrnoException).code;
  return new HostUnavailableError(
    `host ${name}: ${error.message}${code && !error.message.includes(code) ? ` (${code})` : ""}`,
  );
}
