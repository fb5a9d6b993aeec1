/**
 * The compiled daemon on either store backend: for PostgreSQL, a cluster started for the suite,
 * its schema made as an operator makes it (`ippool db migrate`), and the `[store]` section that
 * points the daemon at it.
 */
import { runToExit } from "./daemon.ts";
import { startPostgres } from "./postgres.ts";
import type { StoreBackend } from "./store-backends.ts";

export interface DaemonStore {
  /** TOML to append to the daemon's config ("" for the embedded store, the default). */
  readonly toml: string;
  /** The database's URL, for a second daemon or a direct look (PostgreSQL only). */
  readonly url?: string;
  stop(): Promise<void>;
}

export async function daemonStore(backend: StoreBackend): Promise<DaemonStore> {
  if (backend === "lmdb") return { toml: "", stop: async () => {} };
  const cluster = await startPostgres();
  const migrated = await runToExit(["db", "migrate", "--database-url", cluster.url]);
  if (migrated.code !== 0) {
    await cluster.stop();
    throw new Error(`ippool db migrate failed (${migrated.code}): ${migrated.stderr}`);
  }
  return {
    toml: `\n[store]\nbackend = "postgres"\nurl = "${cluster.url}"\ndaemon = "test-daemon"\n`,
    url: cluster.url,
    stop: () => cluster.stop(),
  };
}
