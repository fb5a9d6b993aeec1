/**
 * The daemon's store, as `[store]` chooses: the embedded LMDB store in the data directory (held
 * by this daemon alone: it takes the directory's lock), or the PostgreSQL database a fleet's
 * daemons share (docs/FLEET.md), whose schema must be this binary's.
 */
import type { Config } from "../config/config.ts";
import type { Logger } from "../log/logger.ts";
import type { Runtime } from "../runtime/index.ts";
import { lockDataDir } from "../store/data-dir-lock.ts";
import { markStopped, openStoreSafely } from "../store/integrity.ts";
import type { LmdbStore } from "../store/lmdb.ts";
import { PostgresStore } from "../store/postgres/store.ts";
import type { StepStore } from "../store/steps.ts";

export interface DaemonStore {
  readonly store: StepStore;
  /** The embedded store, for what only it has: its size, its write health, its EIP state index. */
  readonly lmdb: LmdbStore | undefined;
  /** The shared store, for what only it has: the pages this daemon holds. */
  readonly shared: PostgresStore | undefined;
  /** For the start's log line: which store, and where. */
  readonly description: Record<string, string>;
  close(): Promise<void>;
}

export async function openDaemonStore(config: Config, runtime: Runtime, logger: Logger): Promise<DaemonStore> {
  if (config.store.backend === "postgres") {
    const { daemon, leaseSeconds, timeoutSeconds } = config.store;
    const store = await PostgresStore.open(config.store.url, { daemon, leaseSeconds, timeoutSeconds });
    try {
      await store.joinFleet((message) => stopForNameTaken(logger, message));
    } catch (error) {
      await store.close();
      throw error;
    }
    return {
      store,
      lmdb: undefined,
      shared: store,
      description: { store: "postgres", daemon },
      close: () => store.close(),
    };
  }
  lockDataDir(runtime, config.dataDir);
  const store = await openStoreSafely(config.dataDir, runtime, logger);
  return {
    store,
    lmdb: store,
    shared: undefined,
    description: { store: "lmdb", data_dir: config.dataDir },
    async close() {
      await store.close();
      markStopped(config.dataDir, logger);
    },
  };
}

/**
 * Another process took this daemon's name while it ran: it stops as on SIGTERM (in-flight requests
 * finish), with exit status 2, and its unit stays failed until the names are put right.
 */
function stopForNameTaken(logger: Logger, message: string): void {
  logger.error("daemon name taken: stopping", { error: message });
  process.exitCode = 2;
  process.kill(process.pid, "SIGTERM");
}
