/**
 * Fleet mode against the embedded store, in one run: allocations per second and latency over
 * HTTP (bench/load.ts, closed loop, new vm_ids) for
 *   - the LMDB store (one daemon),
 *   - the PostgreSQL store with one daemon,
 *   - the PostgreSQL store with three daemons on one pool, one client's connections shared
 *     between them;
 *   - both again on a primary with a synchronous standby (`synchronous_standby_names`), the
 *     daemons given both servers in one URL: every commit also waits for the standby's flush.
 * PostgreSQL 15 from Debian runs with its defaults (fsync and synchronous_commit on), its data on
 * the same disk: every 2xx follows a durable commit, as with LMDB. The standby shares the
 * machine's disk and cores with the primary (a real standby has its own).
 *
 *   bun bench/fleet.ts [--seconds 10] [--rounds 3] [--connections 32] [--warm-up 20]
 *
 * Every daemon is started once and first given `--warm-up` seconds of the same load, unmeasured:
 * a daemon's JavaScript is compiled while it runs, and on this project's 2-core machine that took
 * about 20 s under load (three fleet daemons' JIT threads used 1,330 and 1,680 ms of CPU in the
 * first two 5 s windows, 70–90 ms from 30 s on). With the 2 s of warm-up this had before, what was
 * measured of three daemons was mostly their compiling at once, not the steady state a daemon
 * runs in for months.
 *
 * The cases are then measured in turn, `--rounds` times, each ratio against the LMDB daemon
 * measured just before and just after the round, its rate interpolated to the case's place
 * between the two: this machine's speed changes by up to 3x within minutes (steal time), so a
 * ratio of two measurements minutes apart says little, and one to a measurement 20 s before
 * (as this compared until 2026-12-03) carries the drift of those 20 s. The median of the rounds'
 * ratios is the figure to report.
 *
 * Prints one `FLEET round=… case=… rps=… p50=… p99=… non2xx=… cpu_daemons_us=… cpu_postgres_us=…
 * cpu_client_us=…` line per measurement, each round's ratios, and their medians. The CPU figures
 * are per allocation: the daemons' user and system time, that of every `postgres` process on the
 * machine, and the load client's, over the measured seconds. They say where a machine's cores go
 * when the rate stops growing.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { poolsToml } from "../test/support/config-toml.ts";
import { Daemon, runToExit } from "../test/support/daemon.ts";
import { startPostgres } from "../test/support/postgres.ts";
import { startPostgresPair } from "../test/support/postgres-pair.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "32" },
    "warm-up": { type: "string", default: "20" },
  },
  strict: true,
});
const seconds = Number(values.seconds);
const warmUp = Number(values["warm-up"]);
const rounds = Number(values.rounds);
const connections = Number(values.connections);

interface Measured {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
  /** The client's own user and system CPU seconds. */
  readonly clientCpu: number;
}

/** Runs bench/load.ts against the daemons at once: one client process, its connections shared between them. */
async function load(daemons: readonly Daemon[], tag: string, duration: number): Promise<Measured> {
  const ports = daemons.map((daemon) => new URL(daemon.baseUrl).port).join(",");
  const args = ["--port", ports, "--script", "allocate", "--connections", `${connections}`, "--seconds", `${duration}`];
  const run = Bun.spawn([process.execPath, "bench/load.ts", ...args, "--tag", tag], { stdout: "pipe" });
  const line = (await new Response(run.stdout).text()).trim();
  await run.exited;
  const field = (key: string) => Number(new RegExp(`${key}=([\\d.]+)`).exec(line)?.[1] ?? Number.NaN);
  const cpu = run.resourceUsage()?.cpuTime;
  const clientCpu = cpu === undefined ? Number.NaN : Number(cpu.user + cpu.system) / 1e6;
  return { rps: field("rps"), p50: field("p50"), p99: field("p99"), non2xx: field("non2xx"), clientCpu };
}

const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim());

/** User and system CPU seconds used so far by the processes `pids`; those gone since count nothing. */
function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process has exited.
    }
  }
  return ticks / CLOCK_TICKS;
}

function postgresPids(): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "postgres";
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function measure(round: string, name: string, daemons: readonly Daemon[]): Promise<Measured> {
  const daemonPids = daemons.map((daemon) => daemon.proc.pid);
  const serverPids = postgresPids();
  const before = { daemons: cpuSeconds(daemonPids), postgres: cpuSeconds(serverPids) };
  // New vm_ids in every round (load.ts numbers them from 0 after the tag): a repeat is another path.
  const result = await load(daemons, `${name}-${round}`, seconds);
  const allocations = result.rps * seconds;
  const perAllocationUs = (cpu: number) => ((cpu * 1e6) / allocations).toFixed(0);
  const daemonsUs = perAllocationUs(cpuSeconds(daemonPids) - before.daemons);
  // A server process started during the run (a new connection) counts from its start.
  const serverPidsAfter = [...new Set([...serverPids, ...postgresPids()])];
  const postgresUs = perAllocationUs(cpuSeconds(serverPidsAfter) - before.postgres);
  const clientUs = perAllocationUs(result.clientCpu);
  console.log(
    `FLEET round=${round} case=${name} daemons=${daemons.length} rps=${result.rps.toFixed(0)} p50=${result.p50} p99=${result.p99} non2xx=${result.non2xx} cpu_daemons_us=${daemonsUs} cpu_postgres_us=${postgresUs} cpu_client_us=${clientUs}`,
  );
  return result;
}

// Two million addresses: the LMDB daemon allocates for every round of both servers.
const POOL = poolsToml([{ name: "bench", cidr: "10.64.0.0/11" }]);
/** Each case's ratio to the LMDB daemon, one per round. */
const ratios = new Map<string, number[]>();

/** A new database on the server(s) of `url` (its database is `postgres`), migrated as an operator would; its URL. */
async function database(url: string, name: string): Promise<string> {
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin`CREATE DATABASE ${admin(name)}`;
  await admin.end();
  const named = url.replace(/\/postgres(\?|$)/, `/${name}$1`);
  const migrated = await runToExit(["db", "migrate", "--database-url", named]);
  if (migrated.code !== 0) throw new Error(`ippool db migrate: ${migrated.stderr}`);
  return named;
}

/** `daemons` daemons (hv1, hv2, …) on a database of their own. */
async function fleet(url: string, name: string, daemons: number): Promise<Daemon[]> {
  const named = await database(url, name);
  return Promise.all(
    Array.from({ length: daemons }, (_, i) =>
      Daemon.start({ config: `${POOL}\n[store]\nbackend = "postgres"\nurl = "${named}"\ndaemon = "hv${i + 1}"\n` }),
    ),
  );
}

/** The daemons given their warm-up, each set on its own. */
async function warmed(name: string, daemons: Daemon[]): Promise<Daemon[]> {
  await load(daemons, `${name}-warm`, warmUp);
  return daemons;
}

const lmdb = (await warmed("lmdb", [await Daemon.start({ config: POOL })])) as [Daemon];
// One server at a time, so that the standby's cases are not measured beside an idle cluster. The
// daemons of the case not being measured stay up, idle (a heartbeat every few seconds).
const servers = [
  { suffix: "", start: () => startPostgres({ durable: true }) },
  { suffix: "-sync", start: () => startPostgresPair({ durable: true }) },
];
try {
  for (const { suffix, start } of servers) {
    const server = await start();
    const cases: [string, Daemon[]][] = [];
    try {
      cases.push([`postgres-1${suffix}`, await warmed(`postgres-1${suffix}`, await fleet(server.url, "one", 1))]);
      cases.push([`postgres-3${suffix}`, await warmed(`postgres-3${suffix}`, await fleet(server.url, "three", 3))]);
      // LMDB is measured before the first round and after every round: each case's ratio is to
      // the LMDB rate at its place between the two (interpolated), not to one measured before it.
      let before = (await measure(`1${suffix}`, "lmdb", lmdb)).rps;
      for (let round = 1; round <= rounds; round++) {
        const label = `${round}${suffix}`;
        const measured = [];
        for (const [name, daemons] of cases) measured.push({ name, rps: (await measure(label, name, daemons)).rps });
        const after = (await measure(`${label}-after`, "lmdb", lmdb)).rps;
        measured.forEach(({ name, rps }, place) => {
          const share = (place + 1) / (measured.length + 1);
          const ratio = rps / (before + (after - before) * share);
          console.log(`FLEET round=${label} ratio ${name}/lmdb=${ratio.toFixed(3)}`);
          ratios.set(name, [...(ratios.get(name) ?? []), ratio]);
        });
        before = after;
      }
    } finally {
      await Promise.all(cases.flatMap(([, daemons]) => daemons.map((daemon) => daemon.dispose())));
      await server.stop();
    }
  }
} finally {
  await lmdb[0].dispose();
}
for (const [name, values] of ratios) {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] as number;
  console.log(
    `FLEET ratio ${name}/lmdb median=${median.toFixed(3)} rounds=${values.map((v) => v.toFixed(3)).join(",")}`,
  );
}
