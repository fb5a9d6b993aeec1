/** Parses the daemon's command-line flags (the original's plus ippool's own) into overrides. */
import { parseArgs } from "node:util";
import type { Overrides } from "../config/load.ts";
import { UsageError } from "./usage.ts";

export interface ParsedCommand {
  readonly command: "serve" | "fsck" | "backup" | "help" | "version";
  readonly overrides: Overrides;
  /** `backup`'s destination directory. */
  readonly destination?: string;
}

const OPTIONS = {
  config: { type: "string", short: "c" },
  port: { type: "string", short: "p" },
  listen: { type: "string" },
  network: { type: "string", short: "n" },
  gateway: { type: "string", short: "g" },
  socket: { type: "string" },
  "data-dir": { type: "string" },
  "log-format": { type: "string" },
  debug: { type: "boolean", short: "d" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

export function parseCommand(argv: readonly string[]): ParsedCommand {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const [command = "serve", ...extra] = positionals;
  if (command !== "serve" && command !== "fsck" && command !== "backup") {
    throw new UsageError(`unknown command: ${command}`);
  }
  if (values.help) return { command: "help", overrides: {} };
  if (values.version) return { command: "version", overrides: {} };
  if (command === "backup") {
    const [destination, ...more] = extra;
    if (destination === undefined || destination === "")
      throw new UsageError("backup: name the directory to write: ippool backup DEST");
    if (more.length > 0) throw new UsageError(`unexpected argument: ${more[0]}`);
    return { command, overrides: toOverrides(values), destination };
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument: ${extra[0]}`);
  return { command, overrides: toOverrides(values) };
}

function toOverrides(values: Record<string, string | boolean | undefined>): Overrides {
  const text = (key: string) => values[key] as string | undefined;
  const port = text("port");
  if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) <= 65535)) {
    throw new UsageError(`--port: expected a port number from 0 to 65535 (got ${JSON.stringify(port)})`);
  }
  const entries: [keyof Overrides, unknown][] = [
    ["configPath", text("config")],
    ["listen", text("listen")],
    ["port", port === undefined ? undefined : Number(port)],
    ["network", text("network")],
    ["gateway", text("gateway")],
    ["socket", text("socket")],
    ["dataDir", text("data-dir")],
    ["logFormat", text("log-format")],
    ["debug", values.debug],
  ];
  return Object.fromEntries(entries.filter(([, value]) => value !== undefined)) as Overrides;
}
