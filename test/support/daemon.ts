/**
 * Starts the daemon under test as a real process: the compiled binary by default, or
 * `deno run src/main.ts` when IPPOOL_DAEMON=deno. Every daemon gets its own temp data
 * directory, a TCP port chosen by the kernel and a socket path of its own.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { poolsToml, serverToml } from "./config-toml.ts";
import { ensureFreshBinary } from "./fresh-binary.ts";
import { type CommandResult, eventually, sh } from "./processes.ts";

const ROOT = resolve(import.meta.dir, "../..");
export const BINARY = join(ROOT, "dist/ippool");
if (process.env.IPPOOL_DAEMON !== "deno") ensureFreshBinary(ROOT, BINARY);
const DENO = join(ROOT, "node_modules/.bin/deno");

export function daemonCommand(): string[] {
  return process.env.IPPOOL_DAEMON === "deno"
    ? [DENO, "run", "-A", "--unstable-no-legacy-abort", join(ROOT, "src/main.ts")]
    : [BINARY];
}

export function tempDir(prefix = "ippool-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface DaemonOptions {
  /** The config file's text (default: one VM pool); `[server]` is generated from the other options unless the text has one. */
  readonly config?: string;
  readonly dir?: string;
  readonly args?: readonly string[];
  readonly tcp?: boolean;
  /** argv run in front of the daemon, e.g. a testbed's `ip netns exec <ns>`. */
  readonly prefix?: readonly string[];
  /** Added to the test's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Name the config file in IPPOOL_CONFIG, as the container image does, instead of `--config`. */
  readonly configFromEnv?: boolean;
}

export class Daemon {
  private output = "";
  private constructor(
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
    readonly dir: string,
    readonly socket: string,
    readonly configPath: string,
  ) {}

  baseUrl = "";

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const dir = options.dir ?? tempDir();
    const socket = join(dir, "ippool.sock");
    const configPath = join(dir, "ippool.toml");
    writeFileSync(configPath, configText(dir, socket, options));
    const configArgs = options.configFromEnv ? [] : ["--config", configPath];
    const proc = Bun.spawn([...(options.prefix ?? []), ...daemonCommand(), ...configArgs, ...(options.args ?? [])], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, ...options.env, ...(options.configFromEnv ? { IPPOOL_CONFIG: configPath } : {}) },
    });
    const daemon = new Daemon(proc, dir, socket, configPath);
    await daemon.waitStarted();
    return daemon;
  }

  /** Everything the daemon wrote to stdout and stderr so far. */
  get logs(): string {
    return this.output;
  }

  /** Resolves with the logs once they match `pattern` (log lines arrive through a pipe, after the answer). */
  async waitForLog(pattern: RegExp | string, timeoutMs = 5000): Promise<string> {
    const matches = () => (typeof pattern === "string" ? this.output.includes(pattern) : pattern.test(this.output));
    if (!(await eventually(async () => matches(), timeoutMs, 5))) {
      throw new Error(`the daemon logged nothing matching ${pattern} within ${timeoutMs} ms:\n${this.output}`);
    }
    return this.output;
  }

  private async waitStarted(): Promise<void> {
    void this.collect(this.proc.stderr);
    const reader = this.proc.stdout.getReader();
    const decoder = new TextDecoder();
    const deadline = Date.now() + 30_000;
    while (!/\bstarted\b/.test(this.output)) {
      if (Date.now() > deadline) throw new Error(`daemon did not start:\n${this.output}`);
      const { done, value } = await reader.read();
      if (done) {
        await this.proc.exited;
        throw new Error(`daemon exited with ${this.proc.exitCode} before starting:\n${this.output}`);
      }
      this.output += decoder.decode(value);
    }
    const port = /"?tcp"?[=:]"?[^\s:"]+:(\d+)/.exec(this.output)?.[1];
    if (port) this.baseUrl = `http://127.0.0.1:${port}`;
    reader.releaseLock();
    void this.collect(this.proc.stdout);
  }

  private async collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) this.output += decoder.decode(chunk);
  }

  /** A request over TCP, or over the Unix socket with `via: "unix"`. */
  fetch(path: string, init: RequestInit & { via?: "tcp" | "unix" } = {}): Promise<Response> {
    const { via = "tcp", ...rest } = init;
    if (via === "unix") return fetch(`http://localhost${path}`, { ...rest, unix: this.socket } as RequestInit);
    return fetch(`${this.baseUrl}${path}`, rest);
  }

  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field with expect()
  async json(path: string, init: RequestInit & { via?: "tcp" | "unix" } = {}): Promise<{ status: number; body: any }> {
    const response = await this.fetch(path, init);
    return { status: response.status, body: await response.json() };
  }

  post(path: string, body: unknown, via: "tcp" | "unix" = "tcp") {
    return this.json(path, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
      via,
    });
  }

  /** SIGTERM and wait; resolves to the exit code. */
  async stop(): Promise<number> {
    this.proc.kill("SIGTERM");
    return await this.proc.exited;
  }

  async kill9(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.proc.exited;
  }

  /** Stops the daemon if it still runs and removes its directory. */
  async dispose(): Promise<void> {
    if (this.proc.exitCode === null) await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function configText(dir: string, socket: string, options: DaemonOptions): string {
  const config = options.config ?? poolsToml([{ name: "vms", cidr: "172.16.0.0/24", gateway: "172.16.0.1" }]);
  if (/^\[server\]/m.test(config)) return config;
  const listen = options.tcp === false ? "" : "127.0.0.1:0";
  return `${serverToml({ listen, socket, dataDir: dir })}\n${config}`;
}

/** Runs the executable to completion (for startup failures and `fsck`), `env` added to the test's. */
export function runToExit(args: readonly string[], env: Readonly<Record<string, string>> = {}): Promise<CommandResult> {
  return sh([...daemonCommand(), ...args], { allowFail: true, env: { ...process.env, ...env } });
}
