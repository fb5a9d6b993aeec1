/**
 * Raw connections for the resource-limit suites: many plain TCP or Unix-socket clients that stay
 * idle, trickle a request a byte at a time, or push a body as fast as the daemon takes it.
 * Bun.connect rather than node:net: a node:net socket whose write fails because the daemon closed
 * is destroyed before the answer already received is read, so a refusal would look like silence.
 */

import { readFileSync } from "node:fs";
import type { Socket, SocketHandler } from "bun";
import { sh } from "../support/processes.ts";

export type Target = { readonly port: number } | { readonly unix: string };

/** Answer bytes kept per connection: enough for a status line, headers and an error body. */
const KEPT_ANSWER = 4096;

const handlers: SocketHandler<RawConnection> = {
  data(socket, data) {
    const connection = socket.data;
    connection.writtenAtAnswer ??= connection.written;
    if (connection.answer.length < KEPT_ANSWER) connection.answer += data.toString("latin1");
  },
  drain(socket) {
    socket.data.flush();
  },
  close(socket) {
    socket.data.ended();
  },
  error(socket, error) {
    // The close handler follows and records the end.
    socket.data.error ??= error.message;
  },
};

export class RawConnection {
  /** The first bytes the daemon sent. */
  answer = "";
  /** Bytes the kernel accepted from this client so far. */
  written = 0;
  /** `written` when the first answer byte arrived. */
  writtenAtAnswer: number | undefined;
  /** True once the connection is closed, and not by this client. */
  closedByPeer = false;
  isClosed = false;
  /** The first socket error, if any (a reset, a refused write). */
  error: string | undefined;
  readonly closed: Promise<void>;
  private socket: Socket<RawConnection> | undefined;
  private queue: Uint8Array[] = [];
  private refill: (() => Uint8Array | undefined) | undefined;
  private trickler: ReturnType<typeof setInterval> | undefined;
  private closing = false;
  private markClosed!: () => void;

  private constructor() {
    this.closed = new Promise((resolve) => {
      this.markClosed = resolve;
    });
  }

  static async open(target: Target): Promise<RawConnection> {
    const connection = new RawConnection();
    const options = { data: connection, socket: handlers };
    connection.socket =
      "port" in target
        ? await Bun.connect({ ...options, hostname: "127.0.0.1", port: target.port })
        : await Bun.connect({ ...options, unix: target.unix });
    return connection;
  }

  /** Opens `count` connections, `batch` at a time (so the listen backlog is not overrun). */
  static async openMany(target: Target, count: number, batch = 500): Promise<RawConnection[]> {
    const all: RawConnection[] = [];
    for (let start = 0; start < count; start += batch) {
      const size = Math.min(batch, count - start);
      all.push(...(await Promise.all(Array.from({ length: size }, () => RawConnection.open(target)))));
    }
    return all;
  }

  /** Queues bytes and writes as much as the kernel takes now; the rest goes on drain. */
  write(bytes: string | Uint8Array): void {
    this.queue.push(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
    this.flush();
  }

  /** Keeps writing `chunk` as fast as the daemon reads it, until `total` bytes or the connection ends. */
  flood(chunk: Uint8Array, total: number): void {
    let left = total;
    this.refill = () => {
      if (left <= 0) return undefined;
      left -= chunk.byteLength;
      return chunk;
    };
    this.flush();
  }

  /** Writes `text` one byte every `intervalMs`. */
  trickle(text: string, intervalMs: number): void {
    let next = 0;
    this.trickler = setInterval(() => {
      if (next < text.length && !this.isClosed) this.write(text[next++] as string);
    }, intervalMs);
  }

  flush(): void {
    const socket = this.socket;
    if (!socket || this.isClosed) return;
    for (;;) {
      const bytes = this.queue[0] ?? this.refill?.();
      if (!bytes) return;
      if (this.queue.length === 0) this.queue.push(bytes);
      const sent = Math.max(0, socket.write(bytes));
      this.written += sent;
      if (sent < bytes.byteLength) {
        this.queue[0] = bytes.subarray(sent);
        return;
      }
      this.queue.shift();
    }
  }

  /** The HTTP status of the answer, or undefined if none arrived. */
  get status(): number | undefined {
    const match = /^HTTP\/1\.1 (\d{3})/.exec(this.answer);
    return match ? Number(match[1]) : undefined;
  }

  /** The JSON body of the answer (the answers checked here have a Content-Length and fit in KEPT_ANSWER). */
  get json(): unknown {
    return JSON.parse(this.answer.slice(this.answer.indexOf("\r\n\r\n") + 4));
  }

  /** Waits until the answer holds a whole head and `Content-Length` bytes of body. */
  async answered(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!this.hasWholeAnswer()) {
      if (this.isClosed || performance.now() > deadline) {
        throw new Error(`no whole answer (closed: ${this.isClosed}): ${JSON.stringify(this.answer)}`);
      }
      await Bun.sleep(5);
    }
  }

  private hasWholeAnswer(): boolean {
    const end = this.answer.indexOf("\r\n\r\n");
    const length = /\r\ncontent-length: (\d+)/i.exec(this.answer)?.[1];
    return end >= 0 && length !== undefined && this.answer.length >= end + 4 + Number(length);
  }

  ended(): void {
    if (this.isClosed) return;
    clearInterval(this.trickler);
    this.isClosed = true;
    this.closedByPeer = !this.closing;
    this.markClosed();
  }

  destroy(): void {
    this.closing = true;
    clearInterval(this.trickler);
    this.socket?.terminate();
  }
}

/** Connections in state ESTABLISHED whose local port is `port`: the daemon's side of each one. */
export async function establishedOn(port: number): Promise<number> {
  const { stdout } = await sh(["ss", "-Htn", "state", "established", `( sport = :${port} )`]);
  return stdout.split("\n").filter((line) => line.trim() !== "").length;
}

/** Resident memory of a process in KiB. */
export function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]);
}

/** The soft limit on open files of a process ("self" for this one). */
export function openFilesLimit(pid: number | "self"): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  if (!match) throw new Error(`no open-files limit for process ${pid}`);
  return match[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(match[1]);
}

/** Fails (never skips) when a process may not open `needed` files. */
export function requireOpenFiles(pid: number | "self", needed: number, who: string): void {
  const limit = openFilesLimit(pid);
  if (limit < needed) {
    throw new Error(`${who} may open ${limit} files but needs ${needed}: raise the hard limit (ulimit -Hn)`);
  }
}

/** Median of `count` sequential calls of `request`, in milliseconds. */
export async function medianMs(count: number, request: () => Promise<void>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await request();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(count / 2)] as number;
}

/**
 * The most a client can have written when the daemon stops reading: what the two kernels buffer
 * for one TCP connection at most (the send and receive maxima of this machine) plus what the
 * daemon read itself (`readLimit`). Unix sockets buffer far less.
 */
export function bufferedAtMost(readLimit: number): number {
  const max = (file: string) => Number(readFileSync(file, "utf8").trim().split(/\s+/)[2]);
  return max("/proc/sys/net/ipv4/tcp_wmem") + max("/proc/sys/net/ipv4/tcp_rmem") + readLimit;
}
