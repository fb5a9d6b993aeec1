/**
 * A Patroni-managed PostgreSQL 15 cluster for the fleet soak (test/fleet/patroni-soak.ts), all
 * from Debian (`patroni`, `etcd-server`, `postgresql`) and on this machine: one etcd member and
 * two Patroni nodes on loopback ports, in one temporary directory. Synchronous mode (not strict):
 * a commit is acknowledged only once the synchronous standby has it, Patroni promotes only that
 * standby, and a primary left alone stops waiting for one. pg_rewind (with wal_log_hints) lets a
 * crashed primary come back as a replica. ttl 20 s (Patroni's minimum): a dead leader's lock
 * expires, and its standby is promoted, about 20 s after the crash.
 *
 * PostgreSQL refuses to run as root, so as root the nodes run as `nobody` (setpriv execs in
 * place: the spawned pid is Patroni's own).
 */
import { chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import postgres from "postgres";
import { freePort } from "./free-port.ts";
import { clusterDir } from "./postgres.ts";
import { sh, waitFor } from "./processes.ts";

const NOBODY = 65534;
/** How often the waits below look again (each look may open a connection to every node). */
const POLL_MS = 200;
const NODES = ["node1", "node2"] as const;
export type PatroniNode = (typeof NODES)[number];

export interface PatroniCluster {
  /** Both nodes in one URL: connections go to whichever is the primary. */
  readonly url: string;
  /** The node whose PostgreSQL is the primary (asked directly). */
  leader(): Promise<PatroniNode>;
  /** Waits until a node other than `node` is the primary; resolves with it. */
  waitForPrimaryOtherThan(node: PatroniNode, timeoutMs: number): Promise<PatroniNode>;
  /** Waits until one node is the primary and the other its synchronous standby. */
  waitHealthy(timeoutMs: number): Promise<void>;
  /** A crash of the node's machine: `kill -9` of Patroni and of every PostgreSQL process of the node. */
  crash(node: PatroniNode): Promise<void>;
  /** Starts the node's Patroni again (it rewinds and rejoins as a replica). */
  start(node: PatroniNode): Promise<void>;
  stop(): Promise<void>;
}

interface Ports {
  readonly rest: number;
  readonly postgres: number;
}

export async function startPatroni(): Promise<PatroniCluster> {
  const { dir } = clusterDir("ippool-patroni-");
  const asRoot = process.getuid?.() === 0;
  const etcdPorts = { client: freePort(), peer: freePort() };
  const ports = new Map<PatroniNode, Ports>(NODES.map((node) => [node, { rest: freePort(), postgres: freePort() }]));
  const processes = new Map<string, Subprocess>();

  const etcd = Bun.spawn(
    [
      "etcd",
      "--name=soak",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${etcdPorts.client}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdPorts.client}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPorts.peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPorts.peer}`,
      `--initial-cluster=soak=http://127.0.0.1:${etcdPorts.peer}`,
      "--initial-cluster-state=new",
      "--logger=zap",
      `--log-outputs=${join(dir, "etcd.log")}`,
    ],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
  );
  processes.set("etcd", etcd);

  const start = async (node: PatroniNode) => {
    const argv = ["patroni", join(dir, `${node}.yml`)];
    const proc = Bun.spawn(
      asRoot ? ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", ...argv] : argv,
      { stdin: "ignore", stdout: "ignore", stderr: "ignore", env: { ...process.env, HOME: dir } },
    );
    processes.set(node, proc);
  };

  const stopAll = async () => {
    for (const node of NODES) processes.get(node)?.kill("SIGTERM");
    await Promise.race([Promise.all(NODES.map((node) => processes.get(node)?.exited)), Bun.sleep(10_000)]);
    for (const node of NODES) await killNode(dir, node, processes.get(node));
    etcd.kill("SIGTERM");
    await etcd.exited;
  };

  try {
    const etcdHealthy = () =>
      fetch(`http://127.0.0.1:${etcdPorts.client}/health`).then(
        (r) => r.ok,
        () => false,
      );
    await waitFor(etcdHealthy, 15_000, () => "etcd did not answer /health", POLL_MS);
    for (const node of NODES) {
      const nodeDir = join(dir, node);
      mkdirSync(nodeDir, { mode: 0o700 });
      if (asRoot) chownSync(nodeDir, NOBODY, NOBODY);
      const config = nodeConfig(node, nodeDir, ports.get(node) as Ports, etcdPorts.client);
      // JSON is YAML: Patroni reads it as its configuration file.
      writeFileSync(join(dir, `${node}.yml`), JSON.stringify(config, null, 2));
      await start(node);
    }
  } catch (error) {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  /**
   * What each node's PostgreSQL says of itself, asked directly (Patroni's view lags a crash by up
   * to its ttl): the primaries (not in recovery) and, for each, how many synchronous standbys
   * stream from it.
   */
  const roles = async (): Promise<Map<PatroniNode, number>> => {
    const primaries = new Map<PatroniNode, number>();
    for (const node of NODES) {
      const sql = postgres(`postgres://test@127.0.0.1:${ports.get(node)?.postgres}/postgres`, {
        max: 1,
        connect_timeout: 2,
        onnotice: () => {},
      });
      try {
        const [row] = await sql<{ recovering: boolean; sync: number }[]>`
          SELECT pg_is_in_recovery() AS recovering,
                 (SELECT count(*)::int FROM pg_stat_replication WHERE sync_state = 'sync') AS sync`;
        if (row && !row.recovering) primaries.set(node, row.sync);
      } catch {
        // Down, starting, or rewinding.
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
    return primaries;
  };
  const leader = async (): Promise<PatroniNode> => {
    const primaries = [...(await roles()).keys()];
    if (primaries.length !== 1) throw new Error(`patroni: ${primaries.length} primaries (${primaries.join(", ")})`);
    return primaries[0] as PatroniNode;
  };

  const cluster: PatroniCluster = {
    url: `postgres://test@${NODES.map((node) => `127.0.0.1:${ports.get(node)?.postgres}`).join(",")}/postgres?target_session_attrs=primary`,
    leader,
    async waitForPrimaryOtherThan(node, timeoutMs) {
      let found: PatroniNode | undefined;
      const promoted = async () => {
        found = [...(await roles()).keys()].find((other) => other !== node);
        return found !== undefined;
      };
      const message = () => `patroni: no node became the primary within ${timeoutMs} ms\n${logTails(dir)}`;
      await waitFor(promoted, timeoutMs, message, POLL_MS);
      return found as PatroniNode;
    },
    async waitHealthy(timeoutMs) {
      const healthy = async () => {
        const primaries = [...(await roles()).values()];
        return primaries.length === 1 && primaries[0] === 1;
      };
      const message = () => `patroni: no primary with a synchronous standby within ${timeoutMs} ms\n${logTails(dir)}`;
      await waitFor(healthy, timeoutMs, message, POLL_MS);
    },
    async crash(node) {
      await killNode(dir, node, processes.get(node));
      // A crash leaves nothing of the node answering: its PostgreSQL port must refuse connections.
      const port = ports.get(node)?.postgres;
      const open = await Bun.connect({ hostname: "127.0.0.1", port: port as number, socket: { data() {} } }).then(
        (socket) => {
          socket.end();
          return true;
        },
        () => false,
      );
      if (open) throw new Error(`patroni: ${node} still accepts connections on ${port} after its crash`);
    },
    start,
    async stop() {
      await stopAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.waitHealthy(120_000);
  return cluster;
}

/** One node's configuration (see the module's comment for the choices). */
function nodeConfig(node: PatroniNode, nodeDir: string, ports: Ports, etcdPort: number): unknown {
  const user = { username: "test", password: "test" };
  return {
    scope: "ippool-soak",
    namespace: "/service/",
    name: node,
    restapi: { listen: `127.0.0.1:${ports.rest}`, connect_address: `127.0.0.1:${ports.rest}` },
    etcd3: { hosts: `127.0.0.1:${etcdPort}` },
    log: { dir: nodeDir, level: "INFO" },
    bootstrap: {
      dcs: {
        ttl: 20,
        loop_wait: 2,
        retry_timeout: 5,
        maximum_lag_on_failover: 1_048_576,
        synchronous_mode: true,
        synchronous_mode_strict: false,
        postgresql: {
          use_pg_rewind: true,
          remove_data_directory_on_rewind_failure: true,
          remove_data_directory_on_diverged_timelines: true,
          use_slots: true,
          parameters: { wal_level: "replica", hot_standby: "on", wal_log_hints: "on", max_wal_senders: 10 },
        },
      },
      initdb: [{ encoding: "UTF8" }, "data-checksums", { auth: "trust" }],
      pg_hba: [
        "local all all trust",
        "host all all 127.0.0.1/32 trust",
        "local replication all trust",
        "host replication all 127.0.0.1/32 trust",
      ],
    },
    postgresql: {
      listen: `127.0.0.1:${ports.postgres}`,
      connect_address: `127.0.0.1:${ports.postgres}`,
      data_dir: join(nodeDir, "data"),
      bin_dir: "/usr/lib/postgresql/15/bin",
      pgpass: join(nodeDir, "pgpass"),
      authentication: { superuser: user, replication: user, rewind: user },
      parameters: { unix_socket_directories: nodeDir },
    },
  };
}

/**
 * `kill -9` of the node's Patroni, then of its postmaster and every backend: the postmaster is
 * stopped first so that it cannot restart a child between the kills.
 */
async function killNode(dir: string, node: PatroniNode, patroni: Subprocess | undefined): Promise<void> {
  patroni?.kill("SIGKILL");
  await patroni?.exited;
  let postmaster: number;
  try {
    postmaster = Number(readFileSync(join(dir, node, "data", "postmaster.pid"), "utf8").split("\n")[0]);
  } catch {
    return; // PostgreSQL is not running on this node.
  }
  try {
    process.kill(postmaster, "SIGSTOP");
  } catch {
    return; // Already gone.
  }
  await sh(["pkill", "-KILL", "-P", `${postmaster}`], { allowFail: true });
  try {
    process.kill(postmaster, "SIGKILL");
  } catch {
    // It ended meanwhile.
  }
  // Its sockets close when the kernel has torn it down (a zombie left for PID 1 to reap holds none).
  await waitFor(
    () => exited(postmaster),
    10_000,
    () => `patroni: ${node}'s postmaster ${postmaster} outlived SIGKILL`,
  );
}

function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** The last lines of each node's Patroni log, for a failure's message. */
function logTails(dir: string): string {
  return NODES.map((node) => {
    try {
      return `${node}:\n${readFileSync(join(dir, node, "patroni.log"), "utf8")
        .split("\n")
        .slice(-20)
        .join("\n")}`;
    } catch {
      return `${node}: no log`;
    }
  }).join("\n");
}
