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
 *   bun bench/fleet.ts [--seconds 5] [--connections 32]
 *
 * Prints one `FLEET case=… rps=… p50=… p99=… non2xx=… cpu_daemons_us=… cpu_postgres_us=…
 * cpu_client_us=…` line per case and the ratios to LMDB. The CPU figures are per allocation: the
 * daemons' user and system time, that of every `postgres` process on the machine, and the load
 * client's, over the measured seconds. They say where a machine's cores go when the rate stops
 * growing.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { poolsToml } from "../test/support/config-toml.ts";
import { Daemon, runToExit } from "../test/support/daemon.ts";
import { startPostgres } from "../test/support/postgres.ts";
import { startPostgresPair } from "../test/support/postgres-pair.ts";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "5" }, connections: { type: "string", default: "32" } },
  strict: true,
});
const seconds = Number(values.seconds);
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

async function measure(name: string, daemons: readonly Daemon[]): Promise<Measured> {
  await load(daemons, `${name}-warm`, 2);
  const daemonPids = daemons.map((daemon) => daemon.proc.pid);
  const serverPids = postgresPids();
  const before = { daemons: cpuSeconds(daemonPids), postgres: cpuSeconds(serverPids) };
  const result = await load(daemons, name, seconds);
  const allocations = result.rps * seconds;
  const perAllocationUs = (cpu: number) => ((cpu * 1e6) / allocations).toFixed(0);
  const daemonsUs = perAllocationUs(cpuSeconds(daemonPids) - before.daemons);
  // A server process started during the run (a new connection) counts from its start.
  const serverPidsAfter = [...new Set([...serverPids, ...postgresPids()])];
  const postgresUs = perAllocationUs(cpuSeconds(serverPidsAfter) - before.postgres);
  const clientUs = perAllocationUs(result.clientCpu);
  console.log(
    `FLEET case=${name} daemons=${daemons.length} rps=${result.rps.toFixed(0)} p50=${result.p50} p99=${result.p99} non2xx=${result.non2xx} cpu_daemons_us=${daemonsUs} cpu_postgres_us=${postgresUs} cpu_client_us=${clientUs}`,
  );
  return result;
}

const POOL = poolsToml([{ name: "bench", cidr: "10.64.0.0/12" }]);
const results = new Map<string, Measured>();

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

async function run(name: string, start: () => Promise<Daemon[]>): Promise<void> {
  const daemons = await start();
  try {
    results.set(name, await measure(name, daemons));
  } finally {
    await Promise.all(daemons.map((daemon) => daemon.dispose()));
  }
}

await run("lmdb", async () => [await Daemon.start({ config: POOL })]);
// One server at a time, so that the standby's cases are not measured beside an idle cluster.
const servers = [
  { suffix: "", start: () => startPostgres({ durable: true }) },
  { suffix: "-sync", start: () => startPostgresPair({ durable: true }) },
];
for (const { suffix, start } of servers) {
  const server = await start();
  try {
    await run(`postgres-1${suffix}`, () => fleet(server.url, "one", 1));
    await run(`postgres-3${suffix}`, () => fleet(server.url, "three", 3));
  } finally {
    await server.stop();
  }
}
const base = results.get("lmdb")?.rps ?? 0;
for (const name of [...results.keys()].filter((name) => name !== "lmdb")) {
  const rps = results.get(name)?.rps ?? 0;
  console.log(`FLEET ratio ${name}/lmdb=${base > 0 ? (rps / base).toFixed(3) : "n/a"}`);
}
