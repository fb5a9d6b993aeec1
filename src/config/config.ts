/** The validated, frozen configuration the daemon runs with. */
import type { DhcpConfig } from "../dhcp/link.ts";
import type { PoolDefinition } from "../pool/layout.ts";

export type LogFormat = "text" | "json";
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface ListenAddress {
  readonly hostname: string;
  readonly port: number;
}

export interface ProjectDefinition {
  readonly name: string;
  /** Lower-case hex SHA-256 of the API key; the key itself is never stored. */
  readonly apiKeySha256: string;
  /** Most EIPs the project may hold at once. */
  readonly quota: number;
}

/** A hypervisor host reached over SSH. */
export interface HostDefinition {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly user: string;
  readonly privateKeyPath: string;
  /** Pinned host key fingerprint, `SHA256:<base64 without padding>`. */
  readonly hostKey: string;
  readonly libvirtUri: string;
  readonly publicInterface: string;
  /** A non-root SSH user: the network commands go through `sudo -n`. */
  readonly sudo: boolean;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
}

/** Where the state lives: the embedded LMDB store, or a PostgreSQL database a fleet shares. */
export type StoreConfig =
  | { readonly backend: "lmdb" }
  | {
      readonly backend: "postgres";
      /** A connection URL; it may name several hosts. */
      readonly url: string;
      /** This daemon's name among the fleet's: its counts, cursors and pages are kept under it. */
      readonly daemon: string;
      /** Seconds its pages stay its own after its last heartbeat (store/postgres/pages.ts). */
      readonly leaseSeconds: number;
      /** Seconds a request waits for the database before it is answered 503 (store/postgres/deadline.ts). */
      readonly timeoutSeconds: number;
    };

export interface Config {
  readonly listen: ListenAddress | null;
  readonly socket: string | null;
  readonly dataDir: string;
  readonly store: StoreConfig;
  /** Hex SHA-256 of the key the pool API needs over a non-loopback TCP listener. */
  readonly adminKeySha256: string | null;
  /** The pool API needs no key on any TCP address (`server.open_pool_api`); warned of at start. */
  readonly openPoolApi: boolean;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly pools: readonly PoolDefinition[];
  readonly defaultPool: string;
  /** Public pools for elastic IPs (strategy next-fit, no gateway). */
  readonly eipPools: readonly PoolDefinition[];
  readonly defaultEipPool: string | null;
  readonly projects: readonly ProjectDefinition[];
  readonly hosts: readonly HostDefinition[];
  /** Seconds between periodic host reconciliations; 0 turns them off. */
  readonly reconcileIntervalS: number;
  /** Seconds after its creation before an allocation whose VM no host has counts as leaked. */
  readonly leakGracePeriodS: number;
  /** Seconds between collections of leaked hook-made allocations (undefined domains); 0 turns them off. */
  readonly leakCollectIntervalS: number;
  /** DHCP reservations: which pool serves which libvirt network or bridge, and where files go. */
  readonly dhcp: DhcpConfig;
}

/** With no config file and no flags the daemon runs on this: loopback TCP, a socket and one pool. */
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
