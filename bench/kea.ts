/**
 * Kea's DHCPv4 lease rate on this machine, the reference `make bench` sets ippool's allocation
 * rate against: Debian's kea-dhcp4 (memfile, persisted, single-threaded; or with `--pgsql` its
 * PostgreSQL lease backend, on a PostgreSQL 15 cluster started here with fsync on, which fleet
 * mode is set against) in one network namespace
 * and perfdhcp (from kea-admin) in another, across a veth pair, the two sharing the machine's cores
 * as wrk and ippool do. perfdhcp offers DISCOVER/REQUEST exchanges at a rising rate (new client
 * MACs out of a million); the result is the highest rate of completed 4-way exchanges — leases —
 * with fewer than 1 % of packets dropped. Kea starts afresh for every rate, so no run is slowed by
 * the leases of the one before. Kea's memfile writes each lease to its CSV file without an fsync;
 * ippool's every answer waits for one.
 *
 *   bun bench/kea.ts [--seconds 5] [--rates 4000,6000,...] [--pgsql] (as root)
 *
 * Prints the offered rates' results on stderr and one line on stdout:
 * `KEA leases=… offered=… drops=…% version=…` (leases per second).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { type Postgres, startPostgres } from "../test/support/postgres.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rates: { type: "string" },
    pgsql: { type: "boolean", default: false },
  },
  strict: true,
});
const MEMFILE_RATES = "8000,12000,16000,18000,20000,22000,24000,26000,28000,32000";
const PGSQL_RATES = "100,200,250,300,350,400,500,750,1000,1500,2000,3000";
const SECONDS = Number(values.seconds);
const RATES = (values.rates ?? (values.pgsql ? PGSQL_RATES : MEMFILE_RATES)).split(",").map(Number);
const MAX_DROPS_PERCENT = 1;
const SERVER_NS = `ippool-kea-s-${process.pid}`;
const CLIENT_NS = `ippool-kea-c-${process.pid}`;
const SERVER_IF = "kea-srv";
const CLIENT_IF = "kea-cli";
const SERVER_IP = "10.80.0.1";

if (process.getuid?.() !== 0) throw new Error("bench/kea.ts needs root (network namespaces)");
const work = mkdtempSync("/var/tmp/ippool-kea-");

/** Runs a command to its end; any exit status but `ok` is an error. */
function run(argv: string[], ok: readonly number[] = [0]): string {
  const result = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (!ok.includes(result.exitCode)) {
    throw new Error(`${argv.join(" ")} exited ${result.exitCode}: ${result.stderr.toString().trim()}`);
  }
  return result.stdout.toString();
}

function setUpLink(): void {
  run(["ip", "netns", "add", SERVER_NS]);
  run(["ip", "netns", "add", CLIENT_NS]);
  run([
    "ip",
    "link",
    "add",
    SERVER_IF,
    "netns",
    SERVER_NS,
    "type",
    "veth",
    "peer",
    "name",
    CLIENT_IF,
    "netns",
    CLIENT_NS,
  ]);
  run(["ip", "-n", SERVER_NS, "addr", "add", `${SERVER_IP}/12`, "dev", SERVER_IF]);
  run(["ip", "-n", CLIENT_NS, "addr", "add", "10.80.0.2/12", "dev", CLIENT_IF]);
  for (const [ns, link] of [
    [SERVER_NS, SERVER_IF],
    [CLIENT_NS, CLIENT_IF],
  ] as const) {
    run(["ip", "-n", ns, "link", "set", link, "up"]);
    run(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
}

function tearDown(): void {
  for (const ns of [SERVER_NS, CLIENT_NS]) Bun.spawnSync(["ip", "netns", "del", ns]);
  rmSync(work, { recursive: true, force: true });
}

/** Where Kea keeps its leases: a CSV file per round, or a PostgreSQL database per round. */
type LeaseDatabase = (round: number) => Promise<object>;

function memfile(round: number): Promise<object> {
  return Promise.resolve({
    type: "memfile",
    persist: true,
    name: join(work, `leases-${round}.csv`),
    "lfc-interval": 0,
  });
}

/**
 * Kea's PostgreSQL backend on `pg`: a new database per round, its schema made by kea-admin. Kea
 * runs in a network namespace of its own, so it reaches the server through its Unix socket.
 */
function pgsql(pg: Postgres): LeaseDatabase {
  return async (round) => {
    const name = `kea${round}`;
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
    await admin`CREATE DATABASE ${admin(name)}`;
    await admin.end();
    run(["kea-admin", "db-init", "pgsql", "-u", "test", "-p", "", "-n", name, "-h", pg.socketDir, "-P", `${pg.port}`]);
    return { type: "postgresql", name, host: pg.socketDir, port: pg.port, user: "test" };
  };
}

/** A /12 subnet, so no run can use up its pool whatever the rate. */
function keaConfig(leaseDatabase: object): object {
  return {
    Dhcp4: {
      "interfaces-config": { interfaces: [SERVER_IF], "dhcp-socket-type": "raw" },
      "lease-database": leaseDatabase,
      "multi-threading": { "enable-multi-threading": false },
      "valid-lifetime": 3600,
      subnet4: [{ id: 1, subnet: "10.80.0.0/12", pools: [{ pool: "10.80.1.0 - 10.95.255.254" }] }],
      loggers: [{ name: "kea-dhcp4", severity: "WARN", output_options: [{ output: join(work, "kea.log") }] }],
    },
  };
}

async function startKea(round: number, leases: LeaseDatabase): Promise<ReturnType<typeof Bun.spawn>> {
  const config = join(work, `kea-${round}.json`);
  writeFileSync(config, JSON.stringify(keaConfig(await leases(round))));
  const kea = Bun.spawn(["ip", "netns", "exec", SERVER_NS, "kea-dhcp4", "-c", config], {
    stdout: "ignore",
    stderr: Bun.file(join(work, "kea.log")),
    // Its pid file where this run keeps its files: /run/kea exists only once the package's service has run.
    env: { ...process.env, KEA_PIDFILE_DIR: work, KEA_LOCKFILE_DIR: work },
  });
  await Bun.sleep(1500); // kea-dhcp4 opens its raw socket within a second
  if (kea.exitCode !== null) {
    const log = existsSync(join(work, "kea.log")) ? readFileSync(join(work, "kea.log"), "utf8") : "(no log)";
    throw new Error(`kea-dhcp4 exited at start (${kea.exitCode}):\n${log.trim().split("\n").slice(-5).join("\n")}`);
  }
  return kea;
}

interface RateResult {
  readonly offered: number;
  readonly leases: number;
  readonly dropsPercent: number;
}

/** perfdhcp exits 3 when packets were dropped; its report is whole all the same. */
const PERFDHCP_DROPPED = 3;

/** One perfdhcp run at `offered` exchanges per second. */
function perfdhcp(offered: number): RateResult {
  const output = run(
    [
      "ip",
      "netns",
      "exec",
      CLIENT_NS,
      "perfdhcp",
      "-4",
      "-g",
      "single",
      "-l",
      CLIENT_IF,
      "-r",
      String(offered),
      "-R",
      "1000000",
      "-p",
      String(SECONDS),
      "-W",
      "500000",
      SERVER_IP,
    ],
    [0, PERFDHCP_DROPPED],
  );
  // perfdhcp's own "Rate" divides by the run and its final wait (-W): the ACKs over the run are the leases.
  const acked = Number(/REQUEST-ACK\*+\nsent packets: \d+\nreceived packets: (\d+)/.exec(output)?.[1]);
  const sent = [...output.matchAll(/^sent packets: (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  const drops = [...output.matchAll(/^drops: (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  if (!Number.isFinite(acked) || sent === 0) throw new Error(`perfdhcp gave no REQUEST-ACK count:\n${output}`);
  return { offered, leases: acked / SECONDS, dropsPercent: (100 * drops) / sent };
}

async function measure(leases: LeaseDatabase): Promise<RateResult> {
  let best: RateResult | undefined;
  for (const [round, offered] of RATES.entries()) {
    const kea = await startKea(round, leases);
    let result: RateResult;
    try {
      result = perfdhcp(offered);
    } finally {
      kea.kill();
      await kea.exited;
    }
    process.stderr.write(
      `kea: offered ${offered}/s: ${result.leases.toFixed(0)} leases/s, ${result.dropsPercent.toFixed(2)} % dropped\n`,
    );
    if (result.dropsPercent >= MAX_DROPS_PERCENT) break;
    if (!best || result.leases > best.leases) best = result;
  }
  if (!best) throw new Error(`kea dropped ${MAX_DROPS_PERCENT} % or more even at ${RATES[0]}/s`);
  return best;
}

const pg = values.pgsql ? await startPostgres({ durable: true }) : undefined;
try {
  setUpLink();
  const best = await measure(pg ? pgsql(pg) : memfile);
  const version = run(["kea-dhcp4", "-v"]).trim();
  process.stdout.write(
    `KEA leases=${best.leases.toFixed(0)} offered=${best.offered} drops=${best.dropsPercent.toFixed(2)}% version=${version} backend=${pg ? "postgresql" : "memfile"}\n`,
  );
} finally {
  tearDown();
  await pg?.stop();
}
