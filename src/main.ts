/**
 * The ippool executable: `ippool [serve]` runs the daemon, `ippool fsck` checks a data
 * directory. Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
 */
import { parseCommand } from "./cli/flags.ts";
import { runFsck } from "./cli/fsck.ts";
import { HELP, UsageError } from "./cli/usage.ts";
import { ConfigError } from "./config/errors.ts";
import { loadConfig } from "./config/load.ts";
import { serve } from "./daemon/serve.ts";
import { VERSION } from "./version.ts";

async function main(argv: readonly string[]): Promise<void> {
  const { command, overrides } = parseCommand(argv);
  if (command === "help") return void process.stdout.write(HELP);
  if (command === "version") return void process.stdout.write(`ippool ${VERSION}\n`);
  const config = loadConfig(overrides);
  if (command === "fsck") process.exit(await runFsck(config));
  await serve(config);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const usage = error instanceof UsageError || error instanceof ConfigError;
  process.stderr.write(`ippool: ${usage ? "" : "error: "}${(error as Error).message ?? error}\n`);
  if (error instanceof UsageError) process.stderr.write("try 'ippool --help'\n");
  process.exit(usage ? 2 : 1);
});
