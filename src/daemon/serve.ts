/**
 * Runs the daemon: the services (see services.ts), the two listeners, and an orderly stop on
 * SIGTERM/SIGINT (stop accepting, finish in-flight requests, close the store, remove the socket).
 */
import type { Config } from "../config/config.ts";
import { createHandler } from "../http/app.ts";
import { Logger } from "../log/logger.ts";
import { currentRuntime, type FetchHandler, type Listener, type Runtime } from "../runtime/index.ts";
import { lockDataDir } from "../store/data-dir-lock.ts";
import { ListenError } from "./errors.ts";
import { wireServices } from "./services.ts";
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
  lockDataDir(runtime, config.dataDir);
  const { store, hosts, reconciler, leaks, syncReservations, app, requests } = wireServices(
    config,
    logger,
    runtime.name,
  );

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
  } catch (error) {
    await Promise.all(listeners.map((l) => l.stop()));
    reconciler.stop();
    leaks.stop();
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
    leaks.stop();
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
    pools: config.pools.map((pool) => pool.name).join(","),
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
