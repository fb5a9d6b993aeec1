/** The validated, frozen configuration the daemon runs with. */
import type { PoolDefinition } from "../pool/layout.ts";

export type LogFormat = "text" | "json";
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface ListenAddress {
  readonly hostname: string;
  readonly port: number;
}

export interface Config {
  readonly listen: ListenAddress | null;
  readonly socket: string | null;
  readonly dataDir: string;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly pools: readonly PoolDefinition[];
  readonly defaultPool: string;
}

/** SPEC §5: with no config file and no flags, this runs out of the box. */
export const EMBEDDED_DEFAULT = `
[server]
listen = "127.0.0.1:8080"
socket = "data/ippool.sock"
data_dir = "data"

[[pools]]
name = "default"
cidr = "172.16.0.0/24"
gateway = "172.16.0.1"
`;
