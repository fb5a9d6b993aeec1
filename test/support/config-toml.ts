/**
 * The daemon configs that suites and benches write, as TOML text built from plain objects:
 * `configToml` for a whole file, one function per kind of section for the parts. API keys are
 * stored as the daemon expects them, as their SHA-256. Configs that are themselves under test (the
 * config suites and fuzzer) spell their TOML out instead, so a mistake here cannot hide one there.
 */
import { createHash } from "node:crypto";
import type { HostDefinition } from "../../src/config/config.ts";

export interface ServerSpec {
  /** `host:port`, or "" for no TCP listener. */
  readonly listen: string;
  /** The Unix socket's path, or "" for none. */
  readonly socket: string;
  readonly dataDir: string;
  /** The plain admin key (stored as `admin_key_sha256`). */
  readonly adminKey?: string;
}

export interface PoolSpec {
  readonly name: string;
  readonly cidr: string;
  readonly gateway?: string;
  readonly reserved?: readonly string[];
  readonly strategy?: "next-fit" | "lowest";
  readonly default?: boolean;
  /** libvirt networks and bridges whose DHCP server hands the pool's addresses out. */
  readonly networks?: readonly string[];
  readonly bridges?: readonly string[];
}

export interface ProjectSpec {
  readonly name: string;
  /** The plain key clients send in X-API-Key. */
  readonly apiKey: string;
  /** The hash as the file spells it; the lower-case hex SHA-256 of `apiKey` unless given. */
  readonly apiKeySha256?: string;
  readonly quota?: number;
}

/** A `[[hosts]]` entry: what a daemon needs to reach the host; the settings with defaults are optional. */
export type HostSpec = Omit<HostDefinition, "libvirtUri" | "sudo" | "connectTimeoutMs" | "commandTimeoutMs"> &
  Partial<Pick<HostDefinition, "libvirtUri" | "sudo" | "connectTimeoutMs" | "commandTimeoutMs">>;

export interface ConfigSpec {
  readonly server?: ServerSpec;
  /** `[reconcile] interval_s`. */
  readonly reconcileIntervalS?: number;
  readonly leaks?: { readonly gracePeriodS?: number; readonly collectIntervalS?: number };
  readonly pools?: readonly PoolSpec[];
  readonly dhcp?: { readonly dir?: string; readonly libvirtRunDir?: string; readonly libvirtLeaseDir?: string };
  /** EIP pool name → CIDR. */
  readonly eipPools?: Readonly<Record<string, string>>;
  readonly projects?: readonly ProjectSpec[];
  readonly hosts?: readonly HostSpec[];
}

type TomlValue = string | number | boolean | readonly string[];

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A whole config file: the sections `spec` has, in the order of `ConfigSpec`'s fields. */
export function configToml(spec: ConfigSpec): string {
  const sections = [
    spec.server && serverToml(spec.server),
    spec.reconcileIntervalS !== undefined && section("[reconcile]", { intervalS: spec.reconcileIntervalS }),
    spec.leaks && section("[leaks]", spec.leaks),
    spec.pools && poolsToml(spec.pools),
    spec.dhcp && section("[dhcp]", spec.dhcp),
    spec.eipPools && eipPoolsToml(spec.eipPools),
    spec.projects && projectsToml(spec.projects),
    spec.hosts && hostsToml(spec.hosts),
  ];
  return sections.filter((text) => typeof text === "string").join("\n");
}

/** The `[server]` section. */
export function serverToml({ adminKey, ...server }: ServerSpec): string {
  return section("[server]", { ...server, adminKeySha256: adminKey === undefined ? undefined : sha256Hex(adminKey) });
}

/** One `[[pools]]` section per pool. */
export function poolsToml(pools: readonly PoolSpec[]): string {
  return sections("[[pools]]", pools);
}

/** One `[[eip_pools]]` section per entry of `pools` (name → CIDR). */
export function eipPoolsToml(pools: Readonly<Record<string, string>>): string {
  return sections(
    "[[eip_pools]]",
    Object.entries(pools).map(([name, cidr]) => ({ name, cidr })),
  );
}

/** One `[[projects]]` section per project. */
export function projectsToml(projects: readonly ProjectSpec[]): string {
  return sections(
    "[[projects]]",
    projects.map(({ name, apiKey, apiKeySha256, quota }) => ({
      name,
      apiKeySha256: apiKeySha256 ?? sha256Hex(apiKey),
      quota,
    })),
  );
}

/** One `[[hosts]]` section per host. */
export function hostsToml(hosts: readonly HostSpec[]): string {
  return sections(
    "[[hosts]]",
    hosts.map(({ privateKeyPath, ...host }) => ({ ...host, privateKey: privateKeyPath })),
  );
}

function sections(header: string, entries: readonly object[]): string {
  return entries.map((fields) => section(header, fields)).join("\n");
}

/**
 * A table (`[name]`) or an entry of an array of tables (`[[name]]`): one line per field that is
 * not undefined, its name in the file's spelling (`dataDir` → `data_dir`).
 */
function section(header: string, fields: object): string {
  const lines = [header];
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined)
      lines.push(`${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)} = ${tomlValue(value as TomlValue)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** JSON's string escapes are all valid in a TOML basic string. */
function tomlValue(value: TomlValue): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object") return `[${value.map((item) => JSON.stringify(item)).join(", ")}]`;
  return String(value);
}
