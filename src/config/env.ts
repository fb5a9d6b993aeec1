/**
 * The environment variables the daemon reads, all below the command line in precedence:
 * `IPPOOL_CONFIG`, the config file when `--config` is not given (a container image sets it, so
 * the arguments a `docker run` line puts after the image name keep the image's file),
 * `RUST_LOG`, the original IP Pool API's log switch (`-e RUST_LOG=debug` in its README), and
 * `IPPOOL_DATABASE_URL`, the shared store's URL (it holds a password more often than not, so it
 * need not be in the file), used where the file says `[store] backend = "postgres"`.
 */
import type { LogLevel } from "./config.ts";
import { ConfigError } from "./errors.ts";
import type { Overrides } from "./load.ts";

/** tracing's level names (case-insensitive) on ippool's four levels; `trace` and `off` have none. */
const RUST_LEVELS: Readonly<Record<string, LogLevel>> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warn: "warn",
  error: "error",
  off: "error",
};

/** The original's crate was `ippool`: `RUST_LOG=ippool=debug,tower_http=info` asks for debug. */
const OWN_TARGET = "ippool";

export function overridesFromEnv(env: Readonly<Record<string, string | undefined>>): Overrides {
  const configPath = env.IPPOOL_CONFIG || undefined;
  const logLevel = env.RUST_LOG ? logLevelOfRustLog(env.RUST_LOG) : undefined;
  const databaseUrl = env.IPPOOL_DATABASE_URL || undefined;
  return {
    ...(configPath === undefined ? {} : { configPath }),
    ...(logLevel === undefined ? {} : { logLevel }),
    ...(databaseUrl === undefined ? {} : { databaseUrl }),
  };
}

/**
 * The level an `EnvFilter` directive list gives ippool: its own `ippool=LEVEL` directive, else a
 * bare `LEVEL`, else none (the config file's). Directives for other targets are the original's
 * dependencies' and are ignored; a level ippool cannot read is refused, not guessed.
 */
export function logLevelOfRustLog(value: string): LogLevel | undefined {
  let bare: LogLevel | undefined;
  let own: LogLevel | undefined;
  for (const directive of value.split(",").map((part) => part.trim())) {
    if (directive === "") continue;
    const equals = directive.lastIndexOf("=");
    if (equals === -1) {
      if (Object.hasOwn(RUST_LEVELS, directive.toLowerCase())) bare = levelOf(directive, value);
      // A bare target (`ippool`) enables it at every level: as `trace`.
      else if (directive === OWN_TARGET) own = "debug";
      continue;
    }
    if (directive.slice(0, equals) === OWN_TARGET) own = levelOf(directive.slice(equals + 1), value);
  }
  return own ?? bare;
}

function levelOf(text: string, whole: string): LogLevel {
  const level = Object.hasOwn(RUST_LEVELS, text.toLowerCase()) ? RUST_LEVELS[text.toLowerCase()] : undefined;
  if (level === undefined) {
    throw new ConfigError(
      `RUST_LOG=${JSON.stringify(whole)}: ${JSON.stringify(text)} is not a level (trace, debug, info, warn, error, off)`,
    );
  }
  return level;
}
