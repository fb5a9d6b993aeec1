/**
 * Runs the daemon: configuration, store, services, the two listeners, and an orderly stop on
 * SIGTERM/SIGINT (stop accepting, finish in-flight requests, close the store, remove the socket).
 */
import { ProjectDirectory } from "../auth/projects.ts";
import type { Config } from "../config/config.ts";
import { EipAssociations } from "../eip/association.ts";
import { KeyedLocks } from "../eip/locks.ts";
import { EipReconciler } from "../eip/reconcile.ts";
import { EipService, eipPoolKey } from "../eip/service.ts";
import { HostRegistry } from "../hosts/index.ts";
import { createApp, createHandler } from "../http/app.ts";
import { Logger } from "../log/logger.ts";
import { createDaemonMetrics } from "../metrics/index.ts";
import { PoolLayout } from "../pool/layout.ts";
import { LeakDetector } from "../pool/leaks.ts";
import { PoolService } from "../pool/service.ts";
import { reconcilePools } from "../pool/startup.ts";
import { currentRuntime, type FetchHandler, type Listener, type Runtime } from "../runtime/index.ts";
import { LmdbStore } from "../store/lmdb.ts";
import { VERSION } from "../version.ts";
import { SshDomainDirectory } from "./domain-directory.ts";
import { ListenError } from "./errors.ts";
import { SshHostGateway } from "./host-gateway.ts";
import { prepareSocketPath, removeSocket, restrictSocket } from "./socket.ts";

export async function serve(config: Config): Promise<void> {
  const logger = new Logger(config.logFormat, config.logLevel);
  try {
    await start(config, logger);
  } catch (error) {
    logger.flush();
    throw error;
  }
}

async function start(config: Config, logger: Logger): Promise<void> {
  const runtime = await currentRuntime();
  logger.debug("configuration", {
    listen: config.listen ? `${config.listen.hostname}:${config.listen.port}` : "",
    socket: config.socket ?? "",
    default_pool: config.defaultPool,
  });
  const store = new LmdbStore(config.dataDir);
  // The gauges' sources read the services below at scrape time, once the listeners are up.
  const metrics = createDaemonMetrics({
    build: { version: VERSION, runtime: runtime.name },
    pools: {
      pools: [
        ...config.pools.map((pool) => ({ pool: pool.name, kind: "vm" as const })),
        ...config.eipPools.map((pool) => ({ pool: pool.name, kind: "eip" as const })),
      ],
      usage: () => [...pools.usage(), ...eips.usage()],
    },
    eips: {
      pools: config.eipPools.map((pool) => pool.name),
      projects: config.projects.map((project) => project.name),
      count: (pool, project, state) => store.countEips(pool, project, state),
    },
    hostNames: config.hosts.map((host) => host.name),
    hosts: { hosts: () => hosts.all() },
    store,
  });
  const layouts = config.pools.map((definition) => new PoolLayout(definition));
  const pools = new PoolService(store, layouts, config.defaultPool, metrics.pools);
  const eipPools = new Map(
    config.eipPools.map((definition) => [
      definition.name,
      new PoolLayout({ ...definition, name: eipPoolKey(definition.name) }),
    ]),
  );
  reconcilePools(store, [...layouts, ...eipPools.values()]);
  const indexed = store.ensureEipStateIndex();
  if (indexed > 0) logger.info("indexed elastic IPs by state", { eips: indexed });
  const eips = new EipService(store, eipPools, config.defaultEipPool, metrics.pools);
  const hosts = new HostRegistry(config.hosts, { logger, events: metrics.hostCommands });
  const gateway = new SshHostGateway(
    hosts,
    config.eipPools.map((pool) => pool.cidr),
  );
  const locks = new KeyedLocks();
  const associations = new EipAssociations(store, gateway, pools, locks, logger, metrics.associations);
  const reconciler = new EipReconciler(store, gateway, locks, logger, metrics.reconciliation);
  reconciler.start(config.reconcileIntervalS);
  hosts.start();
  const leaks = new LeakDetector(pools, new SshDomainDirectory(hosts), config.leakGracePeriodS, {
    events: metrics.leaks,
    logger,
  });
  const app = createApp(
    { pools, eips, associations, projects: new ProjectDirectory(config.projects), leaks, metrics: metrics.registry },
    logger,
  );

  const listeners: Listener[] = [];
  try {
    if (config.listen) {
      const { hostname, port } = config.listen;
      listeners.push(listenTcp(runtime, hostname, port, createHandler(app, logger, "tcp", metrics.requests), logger));
    }
    if (config.socket) {
      listeners.push(
        await listenUnix(runtime, config.socket, createHandler(app, logger, "unix", metrics.requests), logger),
      );
    }
  } catch (error) {
    await Promise.all(listeners.map((l) => l.stop()));
    reconciler.stop();
    await hosts.close();
    await store.close();
    throw error;
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("stopping", { signal });
    await Promise.all(listeners.map((l) => l.stop()));
    reconciler.stop();
    await hosts.close();
    await store.close();
    if (config.socket) removeSocket(config.socket);
    logger.info("stopped");
    logger.flush();
    process.exit(0);
  };
  runtime.onSignal("SIGTERM", () => void stop("SIGTERM"));
  runtime.onSignal("SIGINT", () => void stop("SIGINT"));
  logger.info("started", {
    runtime: runtime.name,
    pools: layouts.map((l) => l.name).join(","),
    data_dir: config.dataDir,
  });
}

function listenTcp(runtime: Runtime, hostname: string, port: number, handler: FetchHandler, logger: Logger): Listener {
  let listener: Listener;
  try {
    listener = runtime.serveTcp(hostname, port, handler);
  } catch (error) {
    throw new ListenError(`listen ${hostname}:${port}: ${(error as Error).message}`);
  }
  logger.info("listening", { tcp: `${hostname}:${listener.port}` });
  return listener;
}

async function listenUnix(runtime: Runtime, path: string, handler: FetchHandler, logger: Logger): Promise<Listener> {
  await prepareSocketPath(path);
  let listener: Listener;
  try {
    listener = runtime.serveUnix(path, handler);
  } catch (error) {
    throw new ListenError(`socket ${path}: ${(error as Error).message}`);
  }
  restrictSocket(path);
  logger.info("listening", { socket: path });
  return listener;
}
