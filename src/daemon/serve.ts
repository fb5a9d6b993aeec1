/**
 * Runs the daemon: the services (see services.ts), the two listeners, an orderly stop on
 * SIGTERM/SIGINT (stop accepting, finish in-flight requests, close the store, remove the socket),
 * and a reload of the config file on SIGHUP (reload.ts).
 */
import type { Config } from "../config/config.ts";
import { createHandler } from "../http/app.ts";
import { Logger } from "../log/logger.ts";
import { currentRuntime, type FetchHandler, type Listener, type Runtime } from "../runtime/index.ts";
import { letCommitFailureEchoesGo } from "../store/lmdb.ts";
import { ListenError } from "./errors.ts";
import { applyReload, type ReloadTargets } from "./reload.ts";
import { type DaemonParts, wireServices } from "./services.ts";
import { prepareSocketPath, removeSocket, restrictSocket } from "./socket.ts";
import { openDaemonStore } from "./store.ts";

/** `readConfig` reads the config file again, with the flags and environment of the start. */
export async function serve(config: Config, readConfig: () => Config): Promise<void> {
  const logger = new Logger(config.logFormat, config.logLevel);
  try {
    await start(config, readConfig, logger);
  } catch (error) {
    logger.flush();
    throw error;
  }
}

async function start(config: Config, readConfig: () => Config, logger: Logger): Promise<void> {
  const runtime = await currentRuntime();
  logger.debug("configuration", {
    listen: config.listen ? `${config.listen.hostname}:${config.listen.port}` : "",
    socket: config.socket ?? "",
    default_pool: config.defaultPool,
  });
  letCommitFailureEchoesGo((reason) => {
    logger.error("unhandled rejection", { error: String((reason as Error)?.stack ?? reason) });
    logger.flush();
    process.exit(1);
  });
  const store = await openDaemonStore(config, runtime, logger);
  const closeStore = () => store.close();
  let parts: DaemonParts;
  try {
    parts = await wireServices(config, logger, runtime.name, store);
  } catch (error) {
    await closeStore();
    throw error;
  }
  const { hosts, reconciler, leaks, syncReservations, reservationResync, app, requests } = parts;

  const listeners: Listener[] = [];
  try {
    await syncReservations();
    if (config.listen) {
      const { hostname, port } = config.listen;
      listeners.push(listenTcp(runtime, hostname, port, createHandler(app, logger, "tcp", requests), logger));
    }
    if (config.socket) {
      listeners.push(await listenUnix(runtime, config.socket, createHandler(app, logger, "unix", requests), logger));
    }
    // In a fleet other daemons change this host's VMs too: its reservations are brought in line as hosts are reconciled.
    reservationResync.start(config.reconcileIntervalS);
  } catch (error) {
    await Promise.all(listeners.map((l) => l.stop()));
    reservationResync.stop();
    reconciler.stop();
    leaks.stop();
    await hosts.close();
    await closeStore();
    throw error;
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("stopping", { signal });
    await Promise.all(listeners.map((l) => l.stop()));
    reservationResync.stop();
    reconciler.stop();
    leaks.stop();
    await hosts.close();
    await closeStore();
    if (config.socket) removeSocket(config.socket);
    logger.info("stopped");
    logger.flush();
    // 0, unless the daemon stopped itself for a reason that must fail its unit (daemon/store.ts).
    process.exit();
  };
  runtime.onSignal("SIGTERM", () => void stop("SIGTERM"));
  runtime.onSignal("SIGINT", () => void stop("SIGINT"));
  const reloads = reloader(config, readConfig, { ...parts, logger });
  runtime.onSignal("SIGHUP", () => {
    if (!stopping) void reloads.next();
  });
  logger.info("started", {
    runtime: runtime.name,
    pools: config.pools.map((pool) => pool.name).join(","),
    ...store.description,
  });
}

/** One reload at a time, in the order the signals came; each starts from what the last left in force. */
function reloader(config: Config, readConfig: () => Config, targets: ReloadTargets): { next(): Promise<void> } {
  let inForce = config;
  let queue = Promise.resolve();
  const once = async () => {
    let next: Config;
    try {
      next = readConfig();
    } catch (error) {
      targets.logger.error("reload refused: the config file does not load; nothing changed", {
        error: (error as Error).message,
      });
      return;
    }
    try {
      inForce = await applyReload(inForce, next, targets);
    } catch (error) {
      // A bug, not a bad file: said loudly, and the next SIGHUP still runs.
      targets.logger.error("reload failed", { error: (error as Error).message });
    }
  };
  return {
    next: () => {
      queue = queue.then(once);
      return queue;
    },
  };
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
