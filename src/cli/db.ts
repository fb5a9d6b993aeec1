/**
 * The fleet's database (docs/FLEET.md), URL from `--database-url` or IPPOOL_DATABASE_URL:
 * - `ippool db migrate` brings it to this binary's schema version (store/postgres/schema.ts), or
 *   refuses one that is newer;
 * - `ippool db import DATA_DIR` copies a host's LMDB store into it while it is still empty
 *   (store/postgres/import.ts), with that host's daemon stopped.
 */
import { parseArgs } from "node:util";
import { DataDirInUseError } from "../store/errors.ts";
import { openPostgres } from "../store/postgres/connect.ts";
import { unreachable } from "../store/postgres/connection.ts";
import { migrate } from "../store/postgres/schema.ts";
import { UsageError } from "./usage.ts";

const USAGE =
  "usage: ippool db migrate | ippool db import DATA_DIR, with --database-url URL (or env IPPOOL_DATABASE_URL)";
const CONNECT_TIMEOUT_S = 10;

export async function runDb(argv: readonly string[], env: Record<string, string | undefined>): Promise<string> {
  const { values, positionals } = parseDbArgs(argv);
  const url = values["database-url"] ?? env.IPPOOL_DATABASE_URL;
  const [command, dataDir, ...extra] = positionals;
  if (!url || extra.length > 0) throw new UsageError(USAGE);
  if (command === "import" && dataDir !== undefined) return runImport(dataDir, url);
  if (command !== "migrate" || dataDir !== undefined) throw new UsageError(USAGE);
  const sql = openPostgres(url, { max: 1, connect_timeout: CONNECT_TIMEOUT_S, onnotice: () => {} });
  try {
    const { from, to } = await migrate(sql).catch((error: unknown) => {
      throw unreachable(error) ?? error;
    });
    return from === to
      ? `database schema: version ${to}, nothing to do\n`
      : `database schema: version ${from} → ${to}\n`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function runImport(dataDir: string, url: string): Promise<string> {
  const [{ currentRuntime }, { holdDataDirForReading }, { openStoreReadOnly }, { PostgresStore }, { importStore }] =
    await Promise.all([
      import("../runtime/index.ts"),
      import("../store/data-dir-lock.ts"),
      import("../store/read-only.ts"),
      import("../store/postgres/store.ts"),
      import("../store/postgres/import.ts"),
    ]);
  if (holdDataDirForReading(await currentRuntime(), dataDir) === "daemon") {
    throw new DataDirInUseError(
      `a daemon runs on ${dataDir}: stop it first, or what it writes meanwhile is not copied`,
    );
  }
  const source = openStoreReadOnly(dataDir, false);
  try {
    const target = await PostgresStore.open(url, { daemon: "ippool-db-import" });
    try {
      const report = await importStore(source.store, target);
      const what = `${report.pools} pools, ${report.allocations} allocations and ${report.eips} elastic IPs`;
      if (report.differences.length > 0) {
        throw new Error(
          `imported ${what}, but the database read back differs from the store:\n${report.differences.join("\n")}`,
        );
      }
      return `imported ${what} from ${dataDir}; read back, the database matches the store\n`;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

function parseDbArgs(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: { "database-url": { type: "string" } }, allowPositionals: true });
  } catch (error) {
    throw new UsageError(`db: ${(error as Error).message}`);
  }
}
