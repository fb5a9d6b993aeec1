/**
 * Reads the TOML file (or the embedded default), applies command-line overrides and validates
 * the result once. Nothing else in the daemon reads the file or the environment.
 */
import { readFileSync } from "node:fs";
import { parse, TomlError } from "smol-toml";
import { type Config, EMBEDDED_DEFAULT, type LogLevel } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { validateConfig } from "./validate.ts";

/** Settings that override the file: the command line's (`cli/flags.ts`) over the environment's (`env.ts`). */
export interface Overrides {
  readonly configPath?: string;
  readonly listen?: string;
  readonly port?: number;
  /** `a.b.c`: replaces the pools with one /24, as the original daemon did. */
  readonly network?: string;
  readonly gateway?: string;
  readonly socket?: string;
  readonly dataDir?: string;
  readonly debug?: boolean;
  /** From RUST_LOG; `debug` (the flag) wins over it. */
  readonly logLevel?: LogLevel;
  readonly logFormat?: string;
  /** From IPPOOL_DATABASE_URL: the database of `[store] backend = "postgres"`. */
  readonly databaseUrl?: string;
}

export function loadConfig(overrides: Overrides): Config {
  const document =
    overrides.configPath === undefined
      ? parseToml(EMBEDDED_DEFAULT, "embedded default")
      : readToml(overrides.configPath);
  return validateConfig(applyOverrides(document, overrides));
}

function readToml(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(`--config ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parseToml(text, path);
}

function parseToml(text: string, origin: string): Record<string, unknown> {
  try {
    return parse(text) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof TomlError) {
      throw new ConfigError(`${origin}:${error.line}:${error.column}: ${error.message.split("\n")[0]}`);
    }
    throw error;
  }
}

function applyOverrides(document: Record<string, unknown>, flags: Overrides): Record<string, unknown> {
  // `server = 5` (or a date) must not be read as an empty table (found by the config fuzzer).
  if (document.server !== undefined && !isTable(document.server)) {
    throw new ConfigError(`server: expected a [server] table (got ${JSON.stringify(document.server)})`);
  }
  const server = { ...((document.server as Record<string, unknown> | undefined) ?? {}) };
  if (flags.listen !== undefined) server.listen = flags.listen;
  if (flags.port !== undefined) server.listen = `${hostOf(server.listen)}:${flags.port}`;
  if (flags.socket !== undefined) server.socket = flags.socket;
  if (flags.dataDir !== undefined) server.data_dir = flags.dataDir;
  if (flags.logLevel !== undefined) server.log_level = flags.logLevel;
  if (flags.debug) server.log_level = "debug";
  if (flags.logFormat !== undefined) server.log_format = flags.logFormat;
  let pools = document.pools;
  if (flags.network !== undefined) {
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(flags.network)) {
      throw new ConfigError(`--network: expected three octets like 172.16.0 (got ${JSON.stringify(flags.network)})`);
    }
    pools = [{ name: "default", cidr: `${flags.network}.0/24`, gateway: flags.gateway ?? `${flags.network}.1` }];
  } else if (flags.gateway !== undefined && Array.isArray(pools) && pools.length > 0) {
    pools = [{ ...(pools[0] as object), gateway: flags.gateway }, ...pools.slice(1)];
  }
  return { ...document, server, ...(pools === undefined ? {} : { pools }), ...storeOverride(document, flags) };
}

/** The database URL from the environment, over the file's, where the file asks for the shared store. */
function storeOverride(document: Record<string, unknown>, flags: Overrides): Record<string, unknown> {
  if (flags.databaseUrl === undefined || !isTable(document.store) || document.store.backend !== "postgres") return {};
  return { store: { ...document.store, url: flags.databaseUrl } };
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function hostOf(listen: unknown): string {
  if (typeof listen !== "string" || listen === "") return "127.0.0.1";
  return listen.slice(0, listen.lastIndexOf(":"));
}
