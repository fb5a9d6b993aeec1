/** Running commands to completion for the suites, and ending process trees (by PID, never by name). */
import { readdirSync, readFileSync } from "node:fs";

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ShOptions {
  readonly stdin?: string;
  /** Return a non-zero exit instead of throwing. */
  readonly allowFail?: boolean;
  readonly env?: Record<string, string | undefined>;
  readonly cwd?: string;
}

/** Runs argv to completion; throws with the command and its stderr unless it exits 0 (or `allowFail`). */
export async function sh(argv: readonly string[], options: ShOptions = {}): Promise<CommandResult> {
  const proc = Bun.spawn([...argv], {
    stdin: options.stdin === undefined ? "ignore" : new TextEncoder().encode(options.stdin),
    stdout: "pipe",
    stderr: "pipe",
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0 && !options.allowFail) {
    throw new Error(`\`${argv.join(" ")}\` exited with ${code}: ${stderr.trim() || stdout.trim()}`);
  }
  return { code, stdout, stderr };
}

/** The same, synchronously (for exit handlers). Never throws. */
export function shSync(argv: readonly string[]): number {
  try {
    return Bun.spawnSync([...argv], { stdin: "ignore", stdout: "ignore", stderr: "ignore" }).exitCode ?? 1;
  } catch {
    return 1;
  }
}

/** PIDs of every descendant of `pid` (children first found by scanning /proc/<pid>/stat parents). */
export function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = parents.get(ppid) ?? [];
      list.push(Number(entry));
      parents.set(ppid, list);
    } catch {
      // The process ended while we looked.
    }
  }
  const found: number[] = [];
  const walk = (parent: number) => {
    for (const child of parents.get(parent) ?? []) {
      found.push(child);
      walk(child);
    }
  };
  walk(pid);
  return found;
}

/** SIGKILLs `pid` and all its descendants (collected first, so re-parented ones are not missed). */
export function killTree(pid: number): void {
  const all = [pid, ...descendants(pid)];
  for (const target of all) {
    try {
      process.kill(target, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls `check` every `intervalMs` until it returns true; throws `message()` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  message: () => string,
  intervalMs = 5,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(message());
    await Bun.sleep(intervalMs);
  }
}

/** Polls `check` until it holds or `timeoutMs` passes; the answer of one last check after the deadline. */
export async function eventually(check: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await Bun.sleep(intervalMs);
  }
  return check();
}
