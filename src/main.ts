/**
 * The ippool executable. `ippool [serve]` runs the daemon, `ippool fsck` checks a data
 * directory, `ippool backup DEST` copies its store, `ippool db migrate` prepares a fleet's database,
 * and the other commands are the client (`ippool allocate vm-1`, `ippool eip list`).
 * Exit codes: 0 ok, 1 failure or request refused, 2 usage or configuration error (or a database
 * schema newer than this binary), 3 daemon or database unreachable.
 */

// Only what every command needs is imported here. The daemon's modules (Elysia, lmdb, ssh2,
// prom-client: most of the binary's start-up time) are imported when a command needs them, so a
// client command, which the libvirt hook runs at every VM start and stop, starts in milliseconds.
import { DaemonUnreachableError, RequestRefusedError } from "./cli/client/errors.ts";
import { findClientCommand, runClient } from "./cli/client/run.ts";
import { parseCommand } from "./cli/flags.ts";
import { HELP, UsageError } from "./cli/usage.ts";
import { ConfigError } from "./config/errors.ts";
import { currentRuntime } from "./runtime/index.ts";
import {
  DaemonNameTakenError,
  DatabaseUnreachableError,
  SchemaTooNewError,
  SchemaTooOldError,
} from "./store/postgres/errors.ts";
import { VERSION } from "./version.ts";

async function main(argv: readonly string[]): Promise<void> {
  if (argv[0] === "walk-store") {
    // The daemon's structure check at start (store/integrity.ts), run in a child it can lose.
    const besideDaemon = argv[2] === "--beside-daemon";
    if (argv.length !== (besideDaemon ? 3 : 2))
      throw new UsageError("usage: ippool walk-store DATA_DIR [--beside-daemon]");
    const { walkStore } = await import("./cli/walk-store.ts");
    return void process.stdout.write(`${JSON.stringify(await walkStore(argv[1] as string, besideDaemon))}\n`);
  }
  if (argv[0] === "db") {
    const { runDb } = await import("./cli/db.ts");
    return void process.stdout.write(await runDb(argv.slice(1), process.env));
  }
  if (argv[0] === "completion") {
    if (argv[1] !== "bash" || argv.length !== 2) throw new UsageError("usage: ippool completion bash");
    const { bashCompletion } = await import("./cli/completion.ts");
    return void process.stdout.write(bashCompletion());
  }
  const client = findClientCommand(argv);
  if (client) return runClient(await currentRuntime(), client.command, client.rest, process.env);
  const { command, overrides, destination } = parseCommand(argv);
  if (command === "help") return void process.stdout.write(HELP);
  if (command === "version") return void process.stdout.write(`ippool ${VERSION}\n`);
  const [{ loadConfig }, { overridesFromEnv }] = await Promise.all([
    import("./config/load.ts"),
    import("./config/env.ts"),
  ]);
  const readConfig = () => loadConfig({ ...overridesFromEnv(process.env), ...overrides });
  const config = readConfig();
  if (command === "fsck") {
    const { runFsck } = await import("./cli/fsck.ts");
    process.exit(await runFsck(config, await currentRuntime()));
  }
  if (command === "backup") {
    const { runBackup } = await import("./cli/backup.ts");
    const { path, bytes, ms } = await runBackup(config, await currentRuntime(), destination as string);
    return void process.stdout.write(`backup: ${path}, ${bytes} bytes, ${Math.round(ms)} ms\n`);
  }
  const { serve } = await import("./daemon/serve.ts");
  await serve(config, readConfig);
}

function exitCode(error: unknown): number {
  if (
    error instanceof UsageError ||
    error instanceof ConfigError ||
    error instanceof SchemaTooNewError ||
    error instanceof SchemaTooOldError ||
    error instanceof DaemonNameTakenError
  )
    return 2;
  if (error instanceof DaemonUnreachableError || error instanceof DatabaseUnreachableError) return 3;
  return 1;
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const code = exitCode(error);
  const prefix = error instanceof RequestRefusedError ? `${error.code}: ` : code === 2 ? "" : "error: ";
  process.stderr.write(`ippool: ${prefix}${(error as Error).message ?? error}\n`);
  if (error instanceof UsageError) process.stderr.write("try 'ippool --help'\n");
  process.exit(code);
});
