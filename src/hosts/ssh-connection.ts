/**
 * One persistent SSH connection to one hypervisor host (ssh2). It connects in the background,
 * refuses any host key but the pinned one, reconnects with exponential backoff when the connection
 * fails or drops, and runs commands as exec channels with a timeout. Commands are argv arrays,
 * quoted by `command.ts`; nothing here builds a command string by hand.
 */
import { Client, type ClientChannel } from "ssh2";
import type { Fields } from "../log/logger.ts";
import { buildCommand } from "./command.ts";
import {
  HostCommandFailedError,
  HostCommandTimeoutError,
  HostKeyMismatchError,
  HostUnavailableError,
} from "./errors.ts";
import { type CommandFailure, commandName, type HostCommandEvents } from "./events.ts";
import { hostKeyFingerprint } from "./fingerprint.ts";
import { Slots } from "./slots.ts";

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  /** The exit status; 128 + signal number style is not applied: a command killed by a signal has code -1. */
  readonly code: number;
  /** Set when the command was killed by a signal (e.g. "KILL"). */
  readonly signal?: string;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed (it is always closed, so nothing waits on it). */
  readonly stdin?: string;
  /** Overrides the connection's command timeout; counts from the call, queueing included. */
  readonly timeoutMs?: number;
}

/** The subset of `Logger` the host driver uses. */
export interface HostLogger {
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
}

export interface SshConnectionOptions {
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
  /** Default deadline for one command. */
  readonly commandTimeoutMs: number;
  /** SSH keepalive interval; a connection is dropped after `keepaliveCountMax` unanswered ones. */
  readonly keepaliveIntervalMs?: number;
  readonly keepaliveCountMax?: number;
  /** First reconnect delay; doubles on every failed attempt up to `backoffMaxMs`, reset on success. */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Exec channels open at once (sshd's MaxSessions defaults to 10); further commands queue. */
  readonly maxChannels?: number;
  readonly logger?: HostLogger;
  /** Told about every command (its program, duration and failure), for metrics. */
  readonly events?: HostCommandEvents;
}

/** How much later than the local deadline the remote `timeout` kills the command. */
const REMOTE_GRACE_MS = 250;

type State = "idle" | "connecting" | "connected" | "waiting" | "closed";

const DEFAULTS = {
  keepaliveIntervalMs: 5000,
  keepaliveCountMax: 3,
  backoffInitialMs: 250,
  backoffMaxMs: 30_000,
  maxChannels: 8,
};

export class SshConnection {
  readonly name: string;
  private state: State = "idle";
  private client: Client | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private delayMs: number;
  private error: Error | null = null;
  private loggedError = "";
  private mismatch: HostKeyMismatchError | null = null;
  private readonly slots: Slots;
  private readonly running = new Set<(error: Error) => void>();
  private readonly connectListeners = new Set<() => void>();
  private readonly disconnectListeners = new Set<(error: Error | null) => void>();
  private readonly settings: typeof DEFAULTS;
  /**
   * While the first attempt after `start()` is under way: settles with it. A command issued then
   * (a request right after the daemon started) waits for it instead of failing "still connecting".
   */
  private firstAttempt: { settled: Promise<void>; settle: () => void } | null = null;

  constructor(private readonly options: SshConnectionOptions) {
    this.name = options.name;
    this.settings = {
      keepaliveIntervalMs: options.keepaliveIntervalMs ?? DEFAULTS.keepaliveIntervalMs,
      keepaliveCountMax: options.keepaliveCountMax ?? DEFAULTS.keepaliveCountMax,
      backoffInitialMs: options.backoffInitialMs ?? DEFAULTS.backoffInitialMs,
      backoffMaxMs: options.backoffMaxMs ?? DEFAULTS.backoffMaxMs,
      maxChannels: options.maxChannels ?? DEFAULTS.maxChannels,
    };
    this.delayMs = this.settings.backoffInitialMs;
    this.slots = new Slots(this.settings.maxChannels);
  }

  /** True while an authenticated connection is open. */
  get connected(): boolean {
    return this.state === "connected";
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
   * Runs one command in an exec channel and resolves with its output and exit status, whatever the
   * status (see `run` for a version that throws on non-zero). Fails fast with `HostUnavailableError`
   * when not connected — except during the first attempt after `start()`, which it waits for (within
   * its timeout); on timeout kills and closes the channel (the connection stays usable) and rejects
   * with `HostCommandFailedError`.
   */
  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? this.options.commandTimeoutMs;
    const command = buildCommand(withRemoteDeadline(argv, timeoutMs));
    const shown = display(argv);
    const program = commandName(argv);
    const started = performance.now();
    if (!this.connected && this.firstAttempt) await settledWithin(this.firstAttempt.settled, timeoutMs);
    if (!this.connected) {
      this.report(program, null, "unavailable");
      throw this.unavailable("not connected");
    }
    let result: ExecResult;
    try {
      const release = await this.slots.acquire(timeoutMs, () => this.timedOut(shown, timeoutMs));
      try {
        const client = this.client;
        if (!this.connected || !client) throw this.unavailable("not connected");
        const remaining = Math.max(1, timeoutMs - (performance.now() - started));
        result = await this.runChannel(client, command, shown, options.stdin, remaining, timeoutMs);
      } finally {
        release();
      }
    } catch (error) {
      this.report(program, (performance.now() - started) / 1000, failureOf(error));
      throw error;
    }
    this.report(program, (performance.now() - started) / 1000, result.code === 0 ? null : "exit_status");
    return result;
  }

  /** `exec`, but a non-zero exit is a `HostCommandFailedError` naming the command and stderr's first line. */
  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const result = await this.exec(argv, options);
    if (result.code !== 0) throw this.commandFailed(argv, result);
    return result;
  }

  /** The error `run` throws for a finished command that failed. */
  commandFailed(argv: readonly string[], result: ExecResult): HostCommandFailedError {
    const status = result.signal ? `was killed by SIG${result.signal}` : `exited with status ${result.code}`;
    const detail = firstLine(result.stderr) || firstLine(result.stdout);
    return new HostCommandFailedError(
      `host ${this.name}: \`${display(argv)}\` ${status}${detail ? `: ${detail}` : ""}`,
    );
  }

  /** Closes the connection for good: no reconnect; running commands fail with HostUnavailableError. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.state = "closed";
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.failRunning(new HostUnavailableError(`host ${this.name}: connection closed`));
    this.endFirstAttempt();
    const client = this.client;
    this.client = null;
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
    this.client = client;
    let ready = false;
    let lastError: Error | null = null;
    client.on("ready", () => {
      if (this.client !== client || this.state === "closed") return void client.end();
      ready = true;
      this.state = "connected";
      this.error = null;
      this.loggedError = "";
      this.delayMs = this.settings.backoffInitialMs;
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
      if (this.client !== client) return;
      this.client = null;
      const reason = this.mismatch ?? describeError(this.name, lastError, ready);
      this.error = reason;
      const cause = this.mismatch ? this.mismatch.message : (lastError?.message ?? "closed by the other side");
      this.failRunning(new HostUnavailableError(`host ${this.name}: connection dropped: ${cause}`));
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
          retry_ms: this.delayMs,
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
        keepaliveInterval: this.settings.keepaliveIntervalMs,
        keepaliveCountMax: this.settings.keepaliveCountMax,
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
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.settings.backoffMaxMs);
    this.state = "waiting";
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  private runChannel(
    client: Client,
    command: string,
    shown: string,
    stdin: string | undefined,
    remainingMs: number,
    timeoutMs: number,
  ): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let channel: ClientChannel | null = null;
      const finish = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.running.delete(fail);
        outcome();
      };
      const fail = (error: Error) => finish(() => reject(error));
      const timer = setTimeout(() => {
        fail(this.timedOut(shown, timeoutMs));
        if (channel) abandon(channel);
      }, remainingMs);
      this.running.add(fail);
      const opened = (error: Error | undefined, stream: ClientChannel) => {
        if (error) {
          return fail(
            this.connected
              ? new HostCommandFailedError(`host ${this.name}: could not start \`${shown}\`: ${error.message}`)
              : this.unavailable(`connection dropped before \`${shown}\` started`),
          );
        }
        if (settled) return abandon(stream);
        channel = stream;
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let code: number | null = null;
        let signal: string | undefined;
        stream.on("data", (chunk: Buffer) => stdout.push(chunk));
        stream.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
        stream.on("exit", (status: number | null, signalName?: string) => {
          code = status ?? -1;
          if (signalName) signal = signalName;
        });
        stream.on("close", () => {
          if (code === null) return fail(this.unavailable(`connection dropped while running \`${shown}\``));
          const result: ExecResult = {
            stdout: Buffer.concat(stdout).toString("utf8"),
            stderr: Buffer.concat(stderr).toString("utf8"),
            code,
            ...(signal ? { signal } : {}),
          };
          finish(() => resolve(result));
        });
        stream.on("error", () => {});
        stream.end(stdin ?? undefined);
      };
      try {
        client.exec(command, opened);
      } catch (error) {
        fail(this.unavailable(`cannot start \`${shown}\`: ${(error as Error).message}`));
      }
    });
  }

  private unavailable(what: string): HostUnavailableError {
    if (this.error instanceof HostKeyMismatchError) return this.error;
    const why = this.error ? `: ${this.error.message}` : this.state === "connecting" ? ": still connecting" : "";
    return new HostUnavailableError(`host ${this.name}: ${what}${why}`);
  }

  private timedOut(shown: string, timeoutMs: number): HostCommandTimeoutError {
    return new HostCommandTimeoutError(`host ${this.name}: \`${shown}\` timed out after ${timeoutMs} ms`);
  }

  private report(program: string, seconds: number | null, failure: CommandFailure | null): void {
    const events = this.options.events;
    if (!events) return;
    this.notify(() => events.command(this.name, program, seconds, failure));
  }

  private failRunning(error: Error): void {
    for (const fail of [...this.running]) fail(error);
  }

  private notify(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.options.logger?.warn("host connection listener failed", { host: this.name, error: String(error) });
    }
  }
}

/**
 * Runs the command under coreutils `timeout -s KILL`, a little after the local deadline: when a
 * command times out the channel is closed here, and this makes sure the remote process does not
 * outlive it (sshd does not deliver SSH "signal" requests to root sessions, and closing a channel
 * does not stop a command that neither reads nor writes).
 */
function withRemoteDeadline(argv: readonly string[], timeoutMs: number): string[] {
  const seconds = (Math.ceil(timeoutMs) + REMOTE_GRACE_MS) / 1000;
  return ["timeout", "-s", "KILL", String(seconds), ...argv];
}

/**
 * Asks sshd to kill the remote command (an SSH "signal" request; honoured for non-root sessions
 * only) and closes the channel; the connection stays open. ssh2's `channel.signal()` sends nothing once
 * stdin is closed, and stdin is always closed here, so the request goes through the protocol object
 * directly.
 */
function abandon(channel: ClientChannel): void {
  const internal = channel as unknown as {
    outgoing?: { id?: number; state?: string };
    _client?: { _protocol?: { signal(id: number, signal: string): void } };
  };
  try {
    const id = internal.outgoing?.id;
    const state = internal.outgoing?.state;
    if (id !== undefined && (state === "open" || state === "eof")) internal._client?._protocol?.signal(id, "KILL");
  } catch {}
  try {
    channel.close();
  } catch {}
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

function failureOf(error: unknown): CommandFailure {
  if (error instanceof HostCommandTimeoutError) return "timeout";
  if (error instanceof HostUnavailableError) return "unavailable";
  return "error";
}

/** The argv as a short, readable string for messages (never executed). */
function display(argv: readonly string[]): string {
  const text = argv.map((arg) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg))).join(" ");
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((line) => line.trim())
      .find(Boolean) ?? ""
  );
}
