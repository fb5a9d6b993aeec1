/**
 * The command half of an `SshConnection`: each command runs in an exec channel of the open
 * connection, at most `maxChannels` at once (the rest queue), each with a deadline after which its
 * channel is closed while the connection stays open.
 */
import type { Client, ClientChannel } from "ssh2";
import { buildCommand } from "./command.ts";
import { HostCommandFailedError, HostCommandTimeoutError, type HostUnavailableError } from "./errors.ts";
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

/** What the channels need of the connection they run on (a `ReconnectingClient`). */
export interface ChannelConnection {
  readonly name: string;
  readonly connected: boolean;
  readonly client: Client | null;
  /** The error for a command that cannot run because the connection is not open. */
  unavailable(what: string): HostUnavailableError;
}

/** One command, ready to go into a channel. */
export interface ChannelCommand {
  /** The command string from `remoteCommand`. */
  readonly command: string;
  /** The argv as messages show it. */
  readonly shown: string;
  readonly stdin: string | undefined;
  readonly timeoutMs: number;
  /** When the caller asked (`performance.now()`): the deadline counts from there. */
  readonly started: number;
}

/** Below sshd's default MaxSessions of 10. */
const DEFAULT_MAX_CHANNELS = 8;

/** How much later than the local deadline the remote `timeout` kills the command. */
const REMOTE_GRACE_MS = 250;

export class ExecChannels {
  private readonly slots: Slots;
  /** How to fail each command whose channel is open or opening, for when the connection goes. */
  private readonly running = new Set<(error: Error) => void>();

  constructor(
    private readonly connection: ChannelConnection,
    maxChannels = DEFAULT_MAX_CHANNELS,
  ) {
    this.slots = new Slots(maxChannels);
  }

  /**
   * Runs the command once a channel is free, and resolves with its output and exit status whatever
   * the status. Rejects with `HostCommandTimeoutError` when a channel does not come free or the
   * command does not finish in time (its channel is then closed; the connection stays usable), and
   * with `HostUnavailableError` when there is no connection or it drops meanwhile.
   */
  async run(command: ChannelCommand): Promise<ExecResult> {
    const { shown, timeoutMs } = command;
    // The deadline counts from the call: time spent waiting for the first connection is spent.
    const remaining = () => Math.max(1, timeoutMs - (performance.now() - command.started));
    const release = await this.slots.acquire(remaining(), () => this.timedOut(shown, timeoutMs));
    try {
      const client = this.connection.client;
      if (!this.connection.connected || !client) throw this.connection.unavailable("not connected");
      return await this.runChannel(client, command, remaining());
    } finally {
      release();
    }
  }

  /** Fails every command in a channel with `error` (the connection is gone). */
  failAll(error: Error): void {
    for (const fail of [...this.running]) fail(error);
  }

  private runChannel(client: Client, command: ChannelCommand, remainingMs: number): Promise<ExecResult> {
    const { shown } = command;
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
        fail(this.timedOut(shown, command.timeoutMs));
        if (channel) abandon(channel);
      }, remainingMs);
      this.running.add(fail);
      const opened = (error: Error | undefined, stream: ClientChannel) => {
        if (error) {
          return fail(
            this.connection.connected
              ? new HostCommandFailedError(
                  `host ${this.connection.name}: could not start \`${shown}\`: ${error.message}`,
                )
              : this.connection.unavailable(`connection dropped before \`${shown}\` started`),
          );
        }
        // Timed out while the channel was opening: close it at once.
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
          // ssh2 prefixes the protocol's signal name ("KILL" arrives as "SIGKILL"); ExecResult has the bare name.
          if (signalName) signal = signalName.replace(/^SIG/, "");
        });
        stream.on("close", () => {
          // A channel closed without an exit status: the connection went while the command ran.
          if (code === null) return fail(this.connection.unavailable(`connection dropped while running \`${shown}\``));
          const result: ExecResult = {
            stdout: Buffer.concat(stdout).toString("utf8"),
            stderr: Buffer.concat(stderr).toString("utf8"),
            code,
            ...(signal ? { signal } : {}),
          };
          finish(() => resolve(result));
        });
        stream.on("error", () => {});
        stream.end(command.stdin ?? undefined);
      };
      try {
        client.exec(command.command, opened);
      } catch (error) {
        fail(this.connection.unavailable(`cannot start \`${shown}\`: ${(error as Error).message}`));
      }
    });
  }

  private timedOut(shown: string, timeoutMs: number): HostCommandTimeoutError {
    return new HostCommandTimeoutError(`host ${this.connection.name}: \`${shown}\` timed out after ${timeoutMs} ms`);
  }
}

/**
 * The command string for an exec channel: the argv quoted (`command.ts`) and run under coreutils
 * `timeout -s KILL`, a little after the local deadline. When a command times out its channel is
 * closed here, and this makes sure the remote process does not outlive it (sshd does not deliver
 * SSH "signal" requests to root sessions, and closing a channel does not stop a command that
 * neither reads nor writes). Throws `InvalidCommandArgumentError` for an argv no command line can carry.
 */
export function remoteCommand(argv: readonly string[], timeoutMs: number): string {
  const seconds = (Math.ceil(timeoutMs) + REMOTE_GRACE_MS) / 1000;
  return buildCommand(["timeout", "-s", "KILL", String(seconds), ...argv]);
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
