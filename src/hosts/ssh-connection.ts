/**
 * One persistent SSH connection to one hypervisor host (ssh2). `reconnecting-client.ts` keeps it
 * open (pinned host key, reconnect with backoff); `exec-channels.ts` runs commands on it as exec
 * channels with a timeout and a limit on channels open at once. This class puts the two together,
 * waits for the first connection, and reports every command for metrics. Commands are argv arrays,
 * quoted by `command.ts`; nothing here builds a command string by hand.
 */
import { HostCommandFailedError, HostCommandTimeoutError, HostUnavailableError } from "./errors.ts";
import { type CommandFailure, commandName, type HostCommandEvents } from "./events.ts";
import {
  type ChannelCommand,
  ExecChannels,
  type ExecOptions,
  type ExecResult,
  remoteCommand,
} from "./exec-channels.ts";
import { callListener } from "./host-logger.ts";
import { ReconnectingClient, type ReconnectingClientOptions } from "./reconnecting-client.ts";

export interface SshConnectionOptions extends ReconnectingClientOptions {
  /** Default deadline for one command. */
  readonly commandTimeoutMs: number;
  /** Exec channels open at once (sshd's MaxSessions defaults to 10); further commands queue. */
  readonly maxChannels?: number;
  /** Told about every command (its program, duration and failure), for metrics. */
  readonly events?: HostCommandEvents;
}

export class SshConnection {
  readonly name: string;
  private readonly link: ReconnectingClient;
  private readonly channels: ExecChannels;

  constructor(private readonly options: SshConnectionOptions) {
    this.name = options.name;
    this.link = new ReconnectingClient(options, (error) => this.channels.failAll(error));
    this.channels = new ExecChannels(this.link, options.maxChannels);
  }

  /** True while an authenticated connection is open. */
  get connected(): boolean {
    return this.link.connected;
  }

  /** True during the first connection attempt after `start()`, which commands wait for. */
  get startingUp(): boolean {
    return this.link.startingUp;
  }

  /** Why the last connection attempt failed or the connection dropped; null while connected. */
  get lastError(): Error | null {
    return this.link.lastError;
  }

  /** Starts connecting in the background (idempotent). Never throws; failures are retried. */
  start(): void {
    this.link.start();
  }

  /** Calls `listener` on every successful (re)connection. Returns a function that unsubscribes. */
  onConnect(listener: () => void): () => void {
    return this.link.onConnect(listener);
  }

  /** Calls `listener` when an open connection drops (with the error, if one was reported). */
  onDisconnect(listener: (error: Error | null) => void): () => void {
    return this.link.onDisconnect(listener);
  }

  /** Resolves once connected; rejects with `HostUnavailableError` (or the key mismatch) after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<void> {
    return this.link.waitConnected(timeoutMs);
  }

  /**
   * Runs one command in an exec channel and resolves with its output and exit status, whatever the
   * status (see `run` for a version that throws on non-zero). Fails fast with `HostUnavailableError`
   * when not connected — except during the first attempt after `start()`, which it waits for (within
   * its timeout); on timeout kills and closes the channel (the connection stays usable) and rejects
   * with `HostCommandTimeoutError` (a `HostCommandFailedError`).
   */
  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? this.options.commandTimeoutMs;
    const command: ChannelCommand = {
      command: remoteCommand(argv, timeoutMs),
      shown: display(argv),
      stdin: options.stdin,
      timeoutMs,
      started: performance.now(),
    };
    const program = commandName(argv);
    if (!this.link.connected && this.link.startingUp) await this.link.firstAttemptWithin(timeoutMs);
    if (!this.link.connected) {
      this.report(program, null, "unavailable");
      throw this.link.unavailable("not connected");
    }
    let result: ExecResult;
    try {
      result = await this.channels.run(command);
    } catch (error) {
      this.report(program, secondsSince(command.started), failureOf(error));
      throw error;
    }
    this.report(program, secondsSince(command.started), result.code === 0 ? null : "exit_status");
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
  close(): Promise<void> {
    return this.link.close();
  }

  private report(program: string, seconds: number | null, failure: CommandFailure | null): void {
    const events = this.options.events;
    if (!events) return;
    callListener(this.options.logger, this.name, () => events.command(this.name, program, seconds, failure));
  }
}

function secondsSince(started: number): number {
  return (performance.now() - started) / 1000;
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
