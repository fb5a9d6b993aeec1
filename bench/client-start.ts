/**
 * What a client command costs from start to exit, against curl making the same request over the
 * same Unix socket: `ippool health`, `allocate`, `show` and `release`, each run `--runs` times,
 * interleaved with curl's, against a daemon this bench starts (the libvirt hook runs such a
 * command at every VM start and stop). Wall time of the whole process, spawn to exit.
 *
 *   bun bench/client-start.ts [--runs 30] [--binary dist/ippool]
 *
 * Prints one line per command: `CLIENT command=… ippool_median=… curl_median=… ratio=…` (ms).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { median } from "./median.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "30" }, binary: { type: "string", default: "dist/ippool" } },
  strict: true,
});
const RUNS = Number(values.runs);
const binary = values.binary as string;
const work = mkdtempSync("/var/tmp/ippool-client-start-");
const socket = join(work, "ippool.sock");
writeFileSync(
  join(work, "ippool.toml"),
  `[server]\nlisten = ""\nsocket = "${socket}"\ndata_dir = "${join(work, "data")}"\nlog_level = "warn"\n\n[[pools]]\nname = "bench"\ncidr = "10.0.0.0/16"\n`,
);

async function startDaemon(): Promise<ReturnType<typeof Bun.spawn>> {
  const daemon = Bun.spawn([binary, "--config", join(work, "ippool.toml")], { stdout: "ignore", stderr: "inherit" });
  for (let tries = 0; tries < 600; tries++) {
    if (run(curl("GET", "/api/v1/health")).ok) return daemon;
    await Bun.sleep(10);
  }
  throw new Error("the daemon did not answer on its socket");
}

function run(argv: string[]): { ms: number; ok: boolean } {
  const started = performance.now();
  const result = Bun.spawnSync(argv, { stdout: "ignore", stderr: "ignore" });
  return { ms: performance.now() - started, ok: result.exitCode === 0 };
}

function curl(method: string, path: string, body?: string): string[] {
  const data = body === undefined ? [] : ["-H", "Content-Type: application/json", "-d", body];
  return ["curl", "-sf", "-o", "/dev/null", "--unix-socket", socket, "-X", method, ...data, `http://localhost${path}`];
}

/** Each command's ippool and curl command lines for run `i` (allocate, show and release use vm `i`). */
const COMMANDS: Record<string, (i: number) => { ippool: string[]; curl: string[] }> = {
  health: () => ({ ippool: [binary, "health", "--socket", socket], curl: curl("GET", "/api/v1/health") }),
  allocate: (i) => ({
    ippool: [binary, "allocate", `ip-${i}`, "--socket", socket],
    curl: curl("POST", "/api/v1/ip/allocate", `{"vm_id":"curl-${i}"}`),
  }),
  show: (i) => ({ ippool: [binary, "show", `ip-${i}`, "--socket", socket], curl: curl("GET", `/api/v1/ip/curl-${i}`) }),
  release: (i) => ({
    ippool: [binary, "release", `ip-${i}`, "--socket", socket],
    curl: curl("DELETE", `/api/v1/ip/release/curl-${i}`),
  }),
};

const daemon = await startDaemon();
try {
  const times: Record<string, { ippool: number[]; curl: number[] }> = {};
  for (let i = 0; i < RUNS; i++) {
    for (const [name, lines] of Object.entries(COMMANDS)) {
      const { ippool, curl: viaCurl } = lines(i);
      const mine = run(ippool);
      const theirs = run(viaCurl);
      if (!mine.ok || !theirs.ok) throw new Error(`${name} failed (ippool ok: ${mine.ok}, curl ok: ${theirs.ok})`);
      times[name] ??= { ippool: [], curl: [] };
      times[name].ippool.push(mine.ms);
      times[name].curl.push(theirs.ms);
    }
  }
  for (const [name, { ippool, curl: viaCurl }] of Object.entries(times)) {
    const [a, b] = [median(ippool), median(viaCurl)];
    process.stdout.write(
      `CLIENT command=${name} ippool_median=${a.toFixed(1)} curl_median=${b.toFixed(1)} ratio=${(a / b).toFixed(2)}\n`,
    );
  }
} finally {
  daemon.kill();
  await daemon.exited;
  rmSync(work, { recursive: true, force: true });
}
