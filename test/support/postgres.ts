/**
 * A throwaway PostgreSQL cluster for a suite: Debian's PostgreSQL 15 (`make test` installs the
 * `postgresql` package), initialised in a temporary directory, listening on a free loopback port
 * (and its Unix socket in that directory). PostgreSQL refuses to run as root, so as root the cluster
 * runs as `nobody`.
 */
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port.ts";
import { type CommandResult, sh } from "./processes.ts";

export const BIN = "/usr/lib/postgresql/15/bin";
const NOBODY = 65534;

/** Runs one of PostgreSQL's programs in a cluster's directory (as `nobody` when the suite is root). */
export type ClusterRunner = (argv: string[]) => Promise<CommandResult>;

/** A new directory for clusters, owned by `nobody` when run as root, and the runner for it. */
export function clusterDir(prefix: string): { readonly dir: string; readonly run: ClusterRunner } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const asRoot = process.getuid?.() === 0;
  chmodSync(dir, 0o755);
  if (asRoot) chownSync(dir, NOBODY, NOBODY);
  const run = (argv: string[]) => sh(asRoot ? ["runuser", "-u", "nobody", "--", ...argv] : argv, { cwd: dir });
  return { dir, run };
}

/** Starts the cluster in `data`, on loopback `port`, with its Unix socket in `dir`; waits until it is up. */
export function startCluster(
  run: ClusterRunner,
  cluster: {
    readonly dir: string;
    readonly data: string;
    readonly port: number;
    readonly log: string;
    readonly durable: boolean;
  },
): Promise<CommandResult> {
  const { dir, data, port, log, durable } = cluster;
  return run([
    `${BIN}/pg_ctl`,
    "-D",
    data,
    "-w",
    "-l",
    join(dir, log),
    "-o",
    `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1${durable ? "" : " -c fsync=off"}`,
    "start",
  ]);
}

export interface Postgres {
  /** A connection URL for the `postgres` database as the superuser `test` (trust authentication). */
  readonly url: string;
  /** The directory of its Unix socket (reachable from other network namespaces) and its port. */
  readonly socketDir: string;
  readonly port: number;
  /** Stops the server at once (as a crash does), keeping its data. */
  halt(): Promise<void>;
  /** Starts the halted server again on the same port. */
  resume(): Promise<void>;
  /**
   * Stops every process of the server (SIGSTOP) without closing anything: connections stay open
   * and new ones are still accepted by the kernel, but nothing is answered, as when the network
   * to it silently drops packets.
   */
  freeze(): void;
  /** Lets a frozen server go on (SIGCONT). */
  thaw(): void;
  /** Stops the server and removes its data. */
  stop(): Promise<void>;
}

/**
 * `durable` keeps PostgreSQL's own default, fsync on (benchmarks: every commit is on disk, as
 * ippool's LMDB commits are); the suites turn it off, which a crash of the machine would punish
 * but a test's kill of the server does not.
 */
export async function startPostgres({ durable = false }: { readonly durable?: boolean } = {}): Promise<Postgres> {
  const { dir, run } = clusterDir("ippool-pg-");
  const data = join(dir, "data");
  const port = freePort();
  const start = () => startCluster(run, { dir, data, port, log: "server.log", durable });
  const halt = () => run([`${BIN}/pg_ctl`, "-D", data, "-m", "immediate", "-w", "stop"]);
  try {
    await run([`${BIN}/initdb`, "-D", data, "-U", "test", "--auth=trust", "--no-sync"]);
    await start();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `postgres://test@127.0.0.1:${port}/postgres`,
    socketDir: dir,
    port,
    halt: async () => void (await halt()),
    freeze: () => signalCluster(data, "SIGSTOP"),
    thaw: () => signalCluster(data, "SIGCONT"),
    resume: async () => void (await start()),
    async stop() {
      await halt().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Sends `signal` to a cluster's postmaster (its pid is the first line of postmaster.pid) and its children. */
function signalCluster(data: string, signal: "SIGSTOP" | "SIGCONT"): void {
  const postmaster = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
  for (const pid of [postmaster, ...childrenOf(postmaster)]) {
    try {
      process.kill(pid, signal);
    } catch {
      // A child that has exited since it was listed.
    }
  }
}

function childrenOf(parent: number): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === parent;
      } catch {
        return false;
      }
    })
    .map(Number);
}
