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
  /** The same section for a daemon of another name (several daemons on one database); "" for the embedded store. */
  tomlFor(daemon: string): string;
  /** The database's URL (the one the TOML names), for a second daemon or a direct look (PostgreSQL only). */
  readonly url?: string;
  stop(): Promise<void>;
}

/**
 * `overSocket` names the cluster's Unix socket in the URL (as libpq does: `?host=/dir`) instead of
 * its loopback port: a daemon in another network namespace reaches only that.
 */
export async function daemonStore(
  backend: StoreBackend,
  { overSocket = false }: { readonly overSocket?: boolean } = {},
): Promise<DaemonStore> {
  if (backend === "lmdb") return { toml: "", tomlFor: () => "", stop: async () => {} };
  const cluster = await startPostgres();
  const url = overSocket ? `postgresql://test@/postgres?host=${cluster.socketDir}&port=${cluster.port}` : cluster.url;
  const migrated = await runToExit(["db", "migrate", "--database-url", url]);
  if (migrated.code !== 0) {
    await cluster.stop();
    throw new Error(`ippool db migrate failed (${migrated.code}): ${migrated.stderr}`);
  }
  const tomlFor = (daemon: string) => `\n[store]\nbackend = "postgres"\nurl = "${url}"\ndaemon = "${daemon}"\n`;
  return {
    toml: tomlFor("test-daemon"),
    tomlFor,
    url,
    stop: () => cluster.stop(),
  };
}
