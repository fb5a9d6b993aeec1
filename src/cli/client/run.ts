/** `ippool <command> ...`: parses a client command line, makes the request, prints the answer. */
import { parseArgs } from "node:util";
import type { Runtime } from "../../runtime/index.ts";
import { UsageError } from "../usage.ts";
import { type ClientCommand, COMMANDS } from "./commands.ts";
import { DaemonClient } from "./connection.ts";

/** Options every client command takes: where the daemon is, who is asking, how to print. */
const CONNECTION_OPTIONS = ["socket", "url", "api-key", "project"] as const;

/** The first word(s) of argv name a client command: "allocate", "eip associate", … */
export function findClientCommand(argv: readonly string[]): { command: ClientCommand; rest: string[] } | null {
  const [first, second, ...others] = argv;
  const two = COMMANDS.find((command) => command.name === `${first} ${second}`);
  if (two) return { command: two, rest: others };
  if (first === "eip") throw new UsageError(`eip: expected one of ${eipVerbs().join(", ")}`);
  const one = COMMANDS.find((command) => command.name === first);
  return one ? { command: one, rest: argv.slice(1) } : null;
}

export function eipVerbs(): string[] {
  return COMMANDS.filter((c) => c.name.startsWith("eip ")).map((c) => c.name.slice(4));
}

export async function runClient(
  runtime: Runtime,
  command: ClientCommand,
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Promise<void> {
  const strings = [...CONNECTION_OPTIONS, ...command.options];
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        ...Object.fromEntries(strings.map((name) => [name, { type: "string" as const }])),
        ...Object.fromEntries([...(command.flags ?? []), "json"].map((name) => [name, { type: "boolean" as const }])),
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(`${command.name}: ${(error as Error).message}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== command.args.length) {
    const usage = command.args.map((arg) => arg.toUpperCase()).join(" ");
    throw new UsageError(`usage: ippool ${command.name}${usage ? ` ${usage}` : ""}`);
  }
  const text = (name: string) => values[name] as string | undefined;
  const client = new DaemonClient(runtime, {
    ...defined("socket", text("socket") ?? env.IPPOOL_SOCKET),
    ...defined("url", text("url") ?? env.IPPOOL_URL),
    ...defined("apiKey", text("api-key") ?? env.IPPOOL_API_KEY),
    ...defined("project", text("project") ?? env.IPPOOL_PROJECT),
  });
  const args = Object.fromEntries(command.args.map((name, i) => [name, positionals[i] as string]));
  const answer = await command.run(client, args, values as Record<string, string | boolean>);
  process.stdout.write(values.json ? `${JSON.stringify(answer, null, 2)}\n` : command.show(answer));
}

function defined<K extends string>(key: K, value: string | undefined): Partial<Record<K, string>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, string>);
}
