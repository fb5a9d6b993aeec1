import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";
import { configToml } from "../test/support/config-toml.ts";
import { BINARY } from "../test/support/daemon.ts";
import { EipTrickle, FLAP_MODES, type FlapMode, Flapper, type FlapTransition } from "../test/support/flapping.ts";
import { parseExposition, type Sample, samplesOf } from "../test/support/prometheus.ts";
import { Testbed } from "../test/support/testbed.ts";
import { median } from "./median.ts";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: process.env.BENCH_FLAP_ROUNDS ?? "3" },
    duration: { type: "string", default: process.env.BENCH_FLAP_DURATION ?? "10" },
    connections: { type: "string", default: process.env.BENCH_CONNECTIONS ?? "32" },
    "flap-ms": { type: "string", default: process.env.BENCH_FLAP_MS ?? "2000" },
    "trickle-ms": { type: "string", default: process.env.BENCH_FLAP_TRICKLE_MS ?? "500" },
    modes: { type: "string", default: process.env.BENCH_FLAP_MODES ?? FLAP_MODES.join(",") },
    raw: { type: "string", default: "bench/results/raw/flap.json" },
  },
  strict: true,
});
const ROUNDS = positive("rounds");
const DURATION_S = positive("duration");
const CONNECTIONS = positive("connections");
const FLAP_MS = positive("flap-ms");
/** 0 turns the trickle off: the steady runs then do no host work at all (a pure A/B of the flapping). */
const TRICKLE_MS = Number(values["trickle-ms"]);
if (!Number.isInteger(TRICKLE_MS) || TRICKLE_MS < 0) throw new Error("--trickle-ms must be an integer >= 0");
const MODES = values.modes.split(",").map((mode) => {
  if (!FLAP_MODES.includes(mode as FlapMode)) throw new Error(`--modes: ${mode} is not one of ${FLAP_MODES}`);
  return mode as FlapMode;
});

const FLAPPING = "hv1";
const HOSTS = ["hv1", "hv2", "hv3"];
const DOMAINS = 4;
const TRICKLE_DOMAIN = "hv1-trickle";
const RECONCILE_S = 2;
const PROJECT = "acme";
/** What the within-10 % target allows: throughput at least 0.9 of steady, p99 at most 1.1 of it. */
const TARGET = 0.1;
const ROOT = resolve(import.meta.dir, "..");
const PAIRS = join(ROOT, "bench/wrk/pairs.lua");
const HEALTH = join(ROOT, "bench/wrk/health.lua");
const CLOCK_TICKS_PER_S = 100;

// biome-ignore lint/suspicious/noExplicitAny: answers are JSON read field by field
type Json = any;

type Variant = "steady" | FlapMode;

interface Wrk {
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly non2xx: number;
  readonly sockerr: number;
}

interface Run {
  /** 0: the window with no load, before the rounds. */
  readonly round: number;
  readonly variant: Variant;
  /** Null in the window with no load. */
  readonly wrk: Wrk | null;
  /** Daemon CPU time (user + system) per 1,000 wrk requests, ms (null with no load). */
  readonly daemonCpuMsPer1k: number | null;
  /**
   * CPU use over the run, in cores: the daemon's, and everything else's but wrk's (the fake hosts'
   * sshd and the commands they run share this machine's cores, unlike real hypervisors; this
   * script; and whatever else the machine ran meanwhile).
   */
  readonly daemonCores: number;
  readonly otherCores: number;
  /** hv1 in the daemon's log during the run. */
  readonly disconnects: number;
  readonly reconnects: number;
  /** Log lines other than the per-request ones (a logging storm would show here). */
  readonly otherLogLines: number;
  /** /metrics deltas over the run. */
  readonly reconciled: Record<string, number>;
  readonly reconcileFailed: Record<string, number>;
  readonly corrections: number;
  readonly commandFailures: Record<string, number>;
  readonly trickle: Record<string, number>;
  readonly transitions: readonly FlapTransition[];
}

const now = () => performance.timeOrigin + performance.now();
const log = (message: string) => process.stderr.write(`bench: flap: ${message}\n`);

function positive(name: keyof typeof values): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: a positive integer`);
  return n;
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = now() + timeoutMs;
  while (!(await check())) {
    if (now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await Bun.sleep(100);
  }
}

function config(bed: Testbed, dir: string): string {
  return configToml({
    server: { listen: "127.0.0.1:0", socket: join(dir, "ippool.sock"), dataDir: dir },
    reconcileIntervalS: RECONCILE_S,
    pools: [
      { name: "vms", cidr: "10.0.0.0/16" },
      { name: "eipvms", cidr: "192.168.96.0/24" },
    ],
    eipPools: { public: bed.eipCidr },
    projects: [{ name: PROJECT, apiKey: `bench-${bed.id}` }],
    hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 2000 }),
  });
}

/** The compiled daemon in the daemon namespace, its log in a file (a pipe read by this process would cost CPU under load). */
class BenchDaemon {
  private constructor(
    readonly proc: Subprocess,
    readonly dir: string,
    readonly logPath: string,
    readonly port: number,
  ) {}

  static async start(bed: Testbed): Promise<BenchDaemon> {
    const dir = mkdtempSync("/var/tmp/ippool-bench-flap.");
    writeFileSync(join(dir, "ippool.toml"), config(bed, dir));
    const logPath = join(dir, "daemon.log");
    const fd = openSync(logPath, "w");
    const proc = Bun.spawn([...bed.daemonNetnsPrefix(), BINARY, "--config", join(dir, "ippool.toml")], {
      stdin: "ignore",
      stdout: fd,
      stderr: fd,
    });
    closeSync(fd);
    // Interrupted (the testbed's SIGINT/SIGTERM handler exits): the daemon and its data go too.
    const cleanUp = () => {
      proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    };
    process.once("exit", cleanUp);
    let port = 0;
    await waitUntil(
      async () => {
        if (proc.exitCode !== null) throw new Error(`daemon exited: ${readFileSync(logPath, "utf8")}`);
        const text = readFileSync(logPath, "utf8");
        port = Number(/listening tcp=127\.0\.0\.1:(\d+)/.exec(text)?.[1] ?? 0);
        return port > 0 && /\bstarted\b/.test(text);
      },
      30_000,
      "daemon started",
    );
    return new BenchDaemon(proc, dir, logPath, port);
  }

  /** A request over the Unix socket, as the project's administrator. */
  async call(method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }> {
    const response = await fetch(`http://localhost${path}`, {
      method,
      unix: join(this.dir, "ippool.sock"),
      headers: { "content-type": "application/json", "x-project": PROJECT },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    } as RequestInit);
    const text = await response.text();
    return { status: response.status, body: text.startsWith("{") || text.startsWith("[") ? JSON.parse(text) : text };
  }

  async must(method: string, path: string, body?: unknown): Promise<Json> {
    const answer = await this.call(method, path, body);
    if (answer.status >= 300) throw new Error(`${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  async metrics(): Promise<Sample[]> {
    return parseExposition((await this.call("GET", "/metrics")).body as string);
  }

  logSize(): number {
    return Bun.file(this.logPath).size;
  }

  /** Lines matching `pattern` in the log written since byte `from`. */
  async countLogLines(from: number, pattern: RegExp): Promise<number> {
    const text = await Bun.file(this.logPath).slice(from).text();
    return text.match(new RegExp(pattern.source, "gm"))?.length ?? 0;
  }

  async stop(): Promise<void> {
    this.proc.kill("SIGTERM");
    const exited = await Promise.race([this.proc.exited, Bun.sleep(10_000).then(() => null)]);
    if (exited === null) {
      this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** User + system CPU time of a process so far, ms. */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
}

/** Busy CPU time of the whole machine so far (every core; idle and iowait excluded), ms. */
function machineBusyMs(): number {
  const ticks = (readFileSync("/proc/stat", "utf8").split("\n")[0] as string).split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  return ([0, 1, 2, 5, 6, 7].reduce((sum, i) => sum + (ticks[i] ?? 0), 0) * 1000) / CLOCK_TICKS_PER_S;
}

/** wrk in the daemon's namespace; resolves with its BENCH line and its own CPU time (ms). */
async function wrk(
  bed: Testbed,
  daemon: BenchDaemon,
  script: string,
  seconds: number,
  tag: string,
): Promise<{ wrk: Wrk; cpuMs: number }> {
  const proc = Bun.spawn(
    [
      ...bed.daemonNetnsPrefix(),
      ...["wrk", "-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", "-s", script],
      `http://127.0.0.1:${daemon.port}`,
    ],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, BENCH_TAG: tag } },
  );
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const line = /^BENCH (.*)$/m.exec(stdout)?.[1];
  if (code !== 0 || !line) throw new Error(`wrk exited ${code}: ${stderr}${stdout}`);
  const kv = Object.fromEntries(line.split(" ").map((pair) => pair.split("=") as [string, string]));
  const cpu = proc.resourceUsage()?.cpuTime;
  return {
    wrk: {
      requests: Number(kv.requests),
      rps: Number(kv.rps),
      p50: Number(kv.p50),
      p90: Number(kv.p90),
      p99: Number(kv.p99),
      max: Number(kv.max),
      non2xx: Number(kv.non2xx),
      sockerr: Number(kv.sockerr),
    },
    cpuMs: cpu ? Number(cpu.total) / 1000 : 0,
  };
}

/** Sums of a metric's samples by one label, e.g. reconciliations by host. */
function sumsBy(samples: readonly Sample[], name: string, label: string, filter: Record<string, string> = {}) {
  const sums: Record<string, number> = {};
  for (const s of samplesOf(samples, name, filter)) {
    const key = s.labels[label] ?? "";
    sums[key] = (sums[key] ?? 0) + s.value;
  }
  return sums;
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    const d = value - (before[key] ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

/** The counters a run's report shows, read from one scrape. */
function counters(samples: readonly Sample[]) {
  const sum = (values: Record<string, number>) => Object.values(values).reduce((a, b) => a + b, 0);
  return {
    reconciled: sumsBy(samples, "ippool_reconciliation_duration_seconds_count", "host"),
    reconcileFailed: sumsBy(samples, "ippool_reconciliation_failures_total", "host"),
    corrections: sum(sumsBy(samples, "ippool_reconciliation_corrections_total", "host")),
    commandFailures: sumsBy(samples, "ippool_host_command_failures_total", "reason", { host: FLAPPING }),
  };
}

async function setUp(bed: Testbed, daemon: BenchDaemon): Promise<string> {
  let n = 2;
  for (const host of bed.hosts) {
    for (const domain of host.bareDomains) {
      const ip = `192.168.96.${n++}`;
      await daemon.must("POST", "/api/v1/ip/allocate", { vm_id: domain.name, ip, host: host.name, pool: "eipvms" });
      if (domain.name === TRICKLE_DOMAIN) continue;
      const eip = await daemon.must("POST", "/elastic-ips", {});
      await daemon.must("POST", `/elastic-ips/${eip.id}/associate`, { instance_id: domain.name });
    }
  }
  return (await daemon.must("POST", "/elastic-ips", {})).id as string;
}

/** Every host connected, and hv1 reconciled at least once since (so a run never starts mid-recovery). */
async function settle(daemon: BenchDaemon): Promise<void> {
  const reconciled = async () => counters(await daemon.metrics()).reconciled[FLAPPING] ?? 0;
  const up = async () => {
    const samples = samplesOf(await daemon.metrics(), "ippool_host_up");
    return samples.length === HOSTS.length && samples.every((s) => s.value === 1);
  };
  await waitUntil(up, 60_000, "every host connected");
  const before = await reconciled();
  await waitUntil(async () => (await reconciled()) > before, 30_000, `${FLAPPING} reconciled`);
}

async function measure(
  bed: Testbed,
  daemon: BenchDaemon,
  trickleEip: string,
  round: number,
  variant: Variant,
): Promise<Run> {
  const load = round > 0;
  await settle(daemon);
  const before = { samples: counters(await daemon.metrics()), log: daemon.logSize() };
  // `ip netns exec` execs the daemon: the PID is the daemon's.
  const cpu = { daemon: processCpuMs(daemon.proc.pid), machine: machineBusyMs(), at: now() };
  const trickle =
    TRICKLE_MS === 0
      ? null
      : new EipTrickle((method, path, body) => daemon.call(method, path, body), trickleEip, TRICKLE_DOMAIN, TRICKLE_MS);
  const flapper = variant === "steady" ? null : new Flapper(bed, FLAPPING, variant, FLAP_MS);
  const result = load
    ? await wrk(bed, daemon, PAIRS, DURATION_S, `flap-${round}-${variant}`)
    : await Bun.sleep(DURATION_S * 1000).then(() => ({ wrk: null, cpuMs: 0 }));
  const daemonMs = processCpuMs(daemon.proc.pid) - cpu.daemon;
  const otherMs = machineBusyMs() - cpu.machine - daemonMs - result.cpuMs;
  const wallMs = now() - cpu.at;
  const transitions = (await flapper?.stop()) ?? [];
  const outcomes = (await trickle?.stop()) ?? new Map<string, number>();
  const after = counters(await daemon.metrics());
  const hv1 = (what: string) => daemon.countLogLines(before.log, new RegExp(`host ${what} host=${FLAPPING}\\b`));
  return {
    round,
    variant,
    wrk: result.wrk,
    daemonCpuMsPer1k: result.wrk && (daemonMs / result.wrk.requests) * 1000,
    daemonCores: daemonMs / wallMs,
    otherCores: otherMs / wallMs,
    disconnects: await hv1("disconnected"),
    reconnects: await hv1("connected"),
    otherLogLines: await daemon.countLogLines(before.log, /^(?!\S+ INFO request )\S.*$/),
    reconciled: delta(after.reconciled, before.samples.reconciled),
    reconcileFailed: delta(after.reconcileFailed, before.samples.reconcileFailed),
    corrections: after.corrections - before.samples.corrections,
    commandFailures: delta(after.commandFailures, before.samples.commandFailures),
    trickle: Object.fromEntries(outcomes),
    transitions,
  };
}

const f = (n: number, digits = 1) => n.toFixed(digits);
const kv = (values: Record<string, number>) =>
  Object.entries(values)
    .map(([k, v]) => `${k}:${v}`)
    .join(",") || "-";

/** What the daemon did about hv1 during a run. */
function hostColumns(r: Run): string {
  return (
    `${r.disconnects}/${r.reconnects}, ${r.reconciled[FLAPPING] ?? 0}/${r.reconcileFailed[FLAPPING] ?? 0}, ` +
    `${r.corrections}, ${kv(r.commandFailures)}; ${r.otherLogLines}; ${kv(r.trickle)}`
  );
}

/** Cores used by the daemon and by everything else but wrk. */
function cores(r: Run): string {
  return [r.daemonCores, r.otherCores].map((c) => f(c, 2).padStart(6)).join(" ");
}
const CORES_HEADER = ["daemon", "other"].map((h) => h.padStart(6)).join(" ");

function loadRow(r: Run, w: Wrk): string {
  const cells = [
    f(w.rps).padStart(8),
    f(w.p50, 2).padStart(6),
    f(w.p99, 2).padStart(7),
    f(w.max).padStart(7),
    String(w.non2xx + w.sockerr).padStart(4),
    f(r.daemonCpuMsPer1k ?? 0, 0).padStart(6),
    cores(r),
  ];
  return `  ${`${r.round} ${r.variant}`.padEnd(10)} ${cells.join(" ")}  ${hostColumns(r)}`;
}

/** The flapping runs of one mode against the steady ones: medians, and whether the target is met. */
function compare(runs: readonly Run[], mode: FlapMode): { line: string; summary: string } {
  const loaded = runs.filter((r) => r.wrk !== null);
  const of = (variant: Variant, pick: (r: Run) => number) =>
    median(loaded.filter((r) => r.variant === variant).map(pick));
  const ratio = (pick: (r: Run) => number) => of(mode, pick) / of("steady", pick);
  /** Each round's flapping run against that round's steady one: less sensitive to load that drifts. */
  const paired = (pick: (r: Run) => number) =>
    median(
      loaded
        .filter((r) => r.variant === mode)
        .map((r) => pick(r) / pick(loaded.find((s) => s.round === r.round && s.variant === "steady") as Run)),
    );
  const rps = ratio((r) => r.wrk?.rps ?? 0);
  const p99 = ratio((r) => r.wrk?.p99 ?? 0);
  const cpu = ratio((r) => r.daemonCpuMsPer1k ?? 0);
  const met = rps >= 1 - TARGET && p99 <= 1 + TARGET ? "met" : "NOT met";
  const pairedRps = paired((r) => r.wrk?.rps ?? 0);
  const pairs = `paired by round: throughput ${f(pairedRps, 2)}, p99 ${f(
    paired((r) => r.wrk?.p99 ?? 0),
    2,
  )}`;
  return {
    line: `  ${mode} / steady, medians over ${ROUNDS} rounds: throughput ${f(rps, 2)}, p99 ${f(p99, 2)}, daemon CPU per request ${f(cpu, 2)}; within 10 %: ${met} (${pairs})`,
    summary: `${mode} throughput ${f(rps, 2)} p99 ${f(p99, 2)} (${met})`,
  };
}

function report(runs: readonly Run[], began: number): { text: string; ok: boolean } {
  const out = [
    `8. Pool API under load while ${FLAPPING} flaps: dist/ippool in the network-namespace testbed`,
    `  wrk -t1 -c${CONNECTIONS} -d${DURATION_S}s --latency -s bench/wrk/pairs.lua (allocate+release on a /16) over TCP in the daemon namespace;`,
    `  ${HOSTS.length} hosts with ${DOMAINS} associated EIPs each, reconciled every ${RECONCILE_S} s; ${FLAPPING} flaps every ${FLAP_MS} ms (link: sshd killed`,
    `  and eth0 down, then back; sshd: sshd killed and restarted); ${TRICKLE_MS === 0 ? "no EIP changes during the runs" : `every run also changes one EIP on ${FLAPPING} every ${TRICKLE_MS} ms`}`,
    "  hv1 columns: drops/reconnects (daemon log), reconciliations ok/failed, corrections (all hosts), command failures;",
    "  log lines other than requests; the trickle's answers",
    "  cores busy during each run: the daemon's; other = all but the daemon and wrk: the fake hosts (sshd and the commands",
    "  they run share these cores, unlike real hypervisors), this script, and whatever else the machine ran meanwhile",
    `  with no load, ${DURATION_S} s each:`,
    `  ${"".padEnd(10)} ${CORES_HEADER}`,
  ];
  for (const r of runs.filter((run) => run.wrk === null)) {
    out.push(`  ${r.variant.padEnd(10)} ${cores(r)}  ${hostColumns(r)}`);
  }
  out.push(
    "  under load (cpu/1k = daemon CPU ms per 1,000 requests; wrk's own CPU is in none of the core columns):",
    `  ${"run".padEnd(10)} ${"req/s".padStart(8)} ${"p50".padStart(6)} ${"p99".padStart(7)} ${"max".padStart(7)} ${"err".padStart(4)} ${"cpu/1k".padStart(6)} ${CORES_HEADER}`,
  );
  for (const r of runs) if (r.wrk) out.push(loadRow(r, r.wrk));
  const comparisons = MODES.map((mode) => compare(runs, mode));
  out.push(...comparisons.map((c) => c.line));
  const errors = runs.some((r) => r.wrk && r.wrk.non2xx + r.wrk.sockerr > 0);
  const unflapped = runs.some((r) => r.variant !== "steady" && (r.disconnects === 0 || r.reconnects === 0));
  if (errors) out.push("  WARNING: wrk saw errors (see the err column)");
  if (unflapped) out.push(`  WARNING: a flapping run saw no drop or no reconnect of ${FLAPPING}: it measured nothing`);
  out.push(`  section wall time ${f((now() - began) / 1000, 0)} s; raw runs in ${values.raw}`);
  out.push(`flap: flapping/steady medians: ${comparisons.map((c) => c.summary).join("; ")}`);
  return { text: `${out.join("\n")}\n`, ok: !errors && !unflapped };
}

async function main(): Promise<number> {
  const began = now();
  log(`testbed: ${HOSTS.join(", ")} with ${DOMAINS} domains each; ${FLAPPING} flaps (${MODES.join(", ")})`);
  const bed = await Testbed.create({
    hosts: HOSTS.map((name) => ({
      name,
      bareDomains: [
        ...Array.from({ length: DOMAINS }, (_, i) => ({ name: `${name}-d${i + 1}` })),
        ...(name === FLAPPING ? [{ name: TRICKLE_DOMAIN }] : []),
      ],
    })),
  });
  let daemon: BenchDaemon | undefined;
  try {
    daemon = await BenchDaemon.start(bed);
    const d = daemon;
    await settle(d);
    const trickleEip = await setUp(bed, d);
    log("warm-up: 2 s of health, 3 s of allocate+release");
    await wrk(bed, d, HEALTH, 2, "warm-health");
    await wrk(bed, d, PAIRS, 3, "warm");
    const runs: Run[] = [];
    for (const variant of ["steady", ...MODES] as const) {
      const run = await measure(bed, d, trickleEip, 0, variant);
      log(`no load, ${variant}: cores daemon/hosts/script/outside ${cores(run)}`);
      runs.push(run);
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const variant of ["steady", ...MODES] as const) {
        const run = await measure(bed, d, trickleEip, round, variant);
        log(
          `round ${round} ${variant}: ${run.wrk?.rps.toFixed(0)} req/s, p99 ${run.wrk?.p99.toFixed(2)} ms, ` +
            `${FLAPPING} down/up ${run.disconnects}/${run.reconnects}, trickle ${JSON.stringify(run.trickle)}`,
        );
        runs.push(run);
      }
    }
    const { text, ok } = report(runs, began);
    process.stdout.write(text);
    mkdirSync(dirname(values.raw), { recursive: true });
    writeFileSync(
      values.raw,
      `${JSON.stringify({ when: new Date().toISOString(), connections: CONNECTIONS, duration_s: DURATION_S, flap_ms: FLAP_MS, runs }, null, 1)}\n`,
    );
    return ok ? 0 : 1;
  } catch (error) {
    if (daemon) process.stderr.write(`daemon log (tail):\n${readFileSync(daemon.logPath, "utf8").slice(-4000)}\n`);
    throw error;
  } finally {
    await daemon?.stop();
    await bed.destroy();
  }
}

process.exitCode = await main();
