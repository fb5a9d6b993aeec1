/**
 * Start-up time of the daemon: wall time from spawning it until `GET /api/v1/health` first
 * answers 200, polled every 5 ms; the median of `--runs` starts, SIGTERM between them.
 * `bun bench/startup.ts --config FILE [--runs 5] [--binary dist/ippool]` prints one line:
 * `STARTUP median=... min=... max=... runs=a,b,... allocated=N` (milliseconds).
 */
import { parseArgs } from "node:util";
import { freePort } from "../test/support/free-port.ts";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    runs: { type: "string", default: "5" },
    binary: { type: "string", default: "dist/ippool" },
  },
  strict: true,
});
if (values.config === undefined) throw new Error("usage: bun bench/startup.ts --config FILE [--runs 5]");
const config = values.config;
const POLL_MS = 5;
const START_TIMEOUT_MS = 120_000;

async function answers(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

/** One start: milliseconds until health answers, and the pool's allocation count. */
async function startOnce(): Promise<{ ms: number; allocated: number }> {
  const base = `http://127.0.0.1:${freePort()}/api/v1`;
  const started = performance.now();
  const proc = Bun.spawn([values.binary, "--config", config, "--listen", base.slice(7, base.indexOf("/api"))], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
  });
  try {
    while (!(await answers(`${base}/health`))) {
      if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode} before answering`);
      if (performance.now() - started > START_TIMEOUT_MS) throw new Error("daemon did not answer in time");
      await Bun.sleep(POLL_MS);
    }
    const ms = performance.now() - started;
    const stats = (await (await fetch(`${base}/ip/stats`)).json()) as { allocated: number };
    return { ms, allocated: stats.allocated };
  } finally {
    proc.kill("SIGTERM");
    const stopped = await Promise.race([proc.exited, Bun.sleep(10_000).then(() => null)]);
    if (stopped === null) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
  }
}

const samples: number[] = [];
let allocated = 0;
for (let i = 0; i < Number(values.runs); i++) {
  const run = await startOnce();
  samples.push(run.ms);
  allocated = run.allocated;
}
const sorted = [...samples].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
const fmt = (ms: number) => ms.toFixed(1);
console.log(
  `STARTUP median=${fmt(median)} min=${fmt(sorted[0] ?? Number.NaN)} max=${fmt(sorted.at(-1) ?? Number.NaN)} runs=${samples.map(fmt).join(",")} allocated=${allocated}`,
);
