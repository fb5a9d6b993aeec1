/**
 * A PostgreSQL primary with a synchronous standby, for failover tests: Debian's PostgreSQL 15,
 * both in one temporary directory, on loopback ports of their own. The primary waits for the
 * standby's flush before it acknowledges a commit (`synchronous_standby_names`), so what a client
 * was told is committed survives the primary's death. As root they run as `nobody`.
 */
import { appendFileSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";
import { freePort } from "./free-port.ts";
import { BIN, clusterDir, startCluster } from "./postgres.ts";
import { sh } from "./processes.ts";

export interface PostgresPair {
  /** Both servers in one URL: connections go to whichever is the primary. */
  readonly url: string;
  /** The primary alone (for `ippool db migrate`). */
  readonly primaryUrl: string;
  /** The standby alone. */
  readonly standbyUrl: string;
  /** `kill -9` of every process of the primary, as a crash of its machine leaves it. */
  killPrimary(): Promise<void>;
  /** Promotes the standby (`pg_promote()`); resolves once it accepts writes. */
  promoteStandby(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `durable` keeps fsync on in both servers (benchmarks); the suites turn it off, which a crash of
 * the machine would punish but a test's kill of a server does not.
 */
export async function startPostgresPair({
  durable = false,
}: {
  readonly durable?: boolean;
} = {}): Promise<PostgresPair> {
  const { dir, run } = clusterDir("ippool-pg-pair-");
  const [primary, standby] = [join(dir, "primary"), join(dir, "standby")];
  const [primaryPort, standbyPort] = [freePort(), freePort()];
  const start = (data: string, port: number, log: string) => startCluster(run, { dir, data, port, log, durable });
  const url = (port: number) => `postgres://test@127.0.0.1:${port}/postgres`;
  try {
    await run([`${BIN}/initdb`, "-D", primary, "-U", "test", "--auth=trust", "--no-sync"]);
    appendFileSync(
      join(primary, "postgresql.conf"),
      "wal_level = replica\nmax_wal_senders = 4\nsynchronous_commit = on\n",
    );
    await start(primary, primaryPort, "primary.log");
    await run([`${BIN}/pg_basebackup`, "-D", standby, "-h", "127.0.0.1", "-p", `${primaryPort}`, "-U", "test", "-R"]);
    appendFileSync(
      join(standby, "postgresql.auto.conf"),
      `primary_conninfo = 'host=127.0.0.1 port=${primaryPort} user=test application_name=standby'\n`,
    );
    await start(standby, standbyPort, "standby.log");
    // Only now, so that the standby's copy of the configuration does not wait for a standby of its
    // own once promoted (every commit on it would hang).
    await requireSyncStandby(url(primaryPort));
  } catch (error) {
    await run([`${BIN}/pg_ctl`, "-D", standby, "-m", "immediate", "stop"]).catch(() => {});
    await run([`${BIN}/pg_ctl`, "-D", primary, "-m", "immediate", "stop"]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `postgres://test@127.0.0.1:${primaryPort},127.0.0.1:${standbyPort}/postgres?target_session_attrs=primary`,
    primaryUrl: url(primaryPort),
    standbyUrl: url(standbyPort),
    async killPrimary() {
      const postmaster = Number(readFileSync(join(primary, "postmaster.pid"), "utf8").split("\n")[0]);
      await sh(["pkill", "-KILL", "-P", `${postmaster}`], { allowFail: true });
      process.kill(postmaster, "SIGKILL");
    },
    async promoteStandby() {
      // pg_promote() as `pg_ctl promote` does it, waiting until the server leaves recovery.
      const sql = postgres(url(standbyPort), { max: 1, onnotice: () => {} });
      try {
        const [row] = await sql<{ promoted: boolean }[]>`SELECT pg_promote(true, 30) AS promoted`;
        if (!row?.promoted) throw new Error("the standby did not leave recovery within 30 s");
      } finally {
        await sql.end();
      }
    },
    async stop() {
      await run([`${BIN}/pg_ctl`, "-D", standby, "-m", "immediate", "-w", "stop"]).catch(() => {});
      await run([`${BIN}/pg_ctl`, "-D", primary, "-m", "immediate", "-w", "stop"]).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Makes the standby synchronous, and waits until the primary lists it so (commits then wait for it). */
async function requireSyncStandby(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`ALTER SYSTEM SET synchronous_standby_names = 'standby'`;
    await sql`SELECT pg_reload_conf()`;
    for (let tries = 0; tries < 100; tries++) {
      const rows =
        await sql`SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby' AND sync_state = 'sync'`;
      if (rows.length > 0) return;
      await Bun.sleep(100);
    }
    throw new Error("the standby did not become synchronous within 10 s");
  } finally {
    await sql.end();
  }
}
