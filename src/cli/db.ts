/**
 * `ippool db migrate --database-url URL`: brings a fleet's PostgreSQL database to this binary's
 * schema version (store/postgres/schema.ts), or refuses one that is newer. The URL may also come
 * from IPPOOL_DATABASE_URL. Fleet mode itself is being built (docs/FLEET.md): this prepares its
 * database.
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { isConnectionFailure } from "../store/postgres/connection.ts";
import { DatabaseUnreachableError } from "../store/postgres/errors.ts";
import { migrate } from "../store/postgres/schema.ts";
import { UsageError } from "./usage.ts";

const USAGE = "usage: ippool db migrate --database-url URL (or env IPPOOL_DATABASE_URL)";
const CONNECT_TIMEOUT_S = 10;

export async function runDb(argv: readonly string[], env: Record<string, string | undefined>): Promise<string> {
  const { values, positionals } = parseDbArgs(argv);
  const url = values["database-url"] ?? env.IPPOOL_DATABASE_URL;
  if (positionals.join(" ") !== "migrate" || !url) throw new UsageError(USAGE);
  const sql = postgres(url, { max: 1, connect_timeout: CONNECT_TIMEOUT_S, onnotice: () => {} });
  try {
    const { from, to } = await migrate(sql).catch((error: unknown) => {
      throw connectionFailure(error) ?? error;
    });
    return from === to
      ? `database schema: version ${to}, nothing to do\n`
      : `database schema: version ${from} → ${to}\n`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function parseDbArgs(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: { "database-url": { type: "string" } }, allowPositionals: true });
  } catch (error) {
    throw new UsageError(`db: ${(error as Error).message}`);
  }
}

/** A failure to reach or log in to the database, told apart from a failing statement. */
function connectionFailure(error: unknown): DatabaseUnreachableError | undefined {
  if (!isConnectionFailure(error)) return undefined;
  return new DatabaseUnreachableError(`cannot use the database: ${(error as Error).message}`);
}
