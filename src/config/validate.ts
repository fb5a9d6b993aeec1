/**
 * Turns a parsed config document into a `Config`, or throws a `ConfigError` whose one-line
 * message names the key that is wrong.
 */

import { hostname } from "node:os";
import { Value } from "@sinclair/typebox/value";
import { type PoolLink, sameLink } from "../dhcp/link.ts";
import {
  type Cidr,
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIpv4,
  type IpRange,
  parseCidr,
  parseIpv4,
  parseRange,
} from "../net/ipv4.ts";
import { type PoolDefinition, PoolLayout } from "../pool/layout.ts";
import { DEFAULT_TIMEOUT_S } from "../store/postgres/deadline.ts";
import { DEFAULT_LEASE_S } from "../store/postgres/pages.ts";
import type { Config, HostDefinition, ListenAddress, ProjectDefinition, StoreConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { ConfigFile, DAEMON_NAME_PATTERN, type HostSection, type PoolSection, type StoreSection } from "./schema.ts";

/** A project that does not say otherwise may hold this many EIPs. */
const DEFAULT_QUOTA = 20;
const DEFAULT_RECONCILE_INTERVAL_S = 60;
/** 15 minutes: longer than a VM takes from its hook's allocation to being listed by libvirt. */
const DEFAULT_LEAK_GRACE_PERIOD_S = 900;
const DEFAULT_LEAK_COLLECT_INTERVAL_S = 300;

/** `/pools/0/cidr` → `pools[0].cidr` */
function keyOf(pointer: string): string {
  return pointer
    .split("/")
    .filter(Boolean)
    .map((escaped, i) => {
      const part = escaped.replaceAll("~1", "/").replaceAll("~0", "~");
      if (/^\d+$/.test(part)) return `[${part}]`;
      // Keys with spaces, control characters or path punctuation are quoted, so the message stays
      // one line and unambiguous (found by the config fuzzer).
      if (/[\s\p{Cc}."[\]]/u.test(part)) return `[${JSON.stringify(part)}]`;
      return i === 0 ? part : `.${part}`;
    })
    .join("");
}

/** Longest value quoted in a message: the line stays short when the value is a whole section. */
const SHOWN_MAX = 80;

/** A value as a message quotes it: its JSON, or for a long one what it is (an array of 300 tables). */
function shown(value: unknown): string {
  const json = JSON.stringify(value) ?? String(value);
  if (json.length <= SHOWN_MAX) return json;
  if (Array.isArray(value)) return `an array of ${value.length} entries`;
  if (typeof value === "object" && value !== null) return `a table of ${Object.keys(value).length} keys`;
  return `${json.slice(0, SHOWN_MAX)}…`;
}

export function validateConfig(document: unknown): Config {
  const error = Value.Errors(ConfigFile, document).First();
  if (error) {
    const key = keyOf(error.path) || "(top level)";
    const detail = error.message === "Unexpected property" ? "unknown key" : error.message.toLowerCase();
    throw new ConfigError(`${key}: ${detail}${error.value === undefined ? "" : ` (got ${shown(error.value)})`}`);
  }
  const file = document as ConfigFile;
  const server = file.server ?? {};
  const pools = (file.pools ?? []).map((section, i) => validatePool(section, `pools[${i}]`));
  if (pools.length === 0) throw new ConfigError("pools: at least one [[pools]] section is required");
  const eipPools = (file.eip_pools ?? []).map((section, i) =>
    validatePool({ ...section, strategy: "next-fit" }, `eip_pools[${i}]`, "eip"),
  );
  checkDistinct([
    ...pools.map((pool, i) => ({ key: `pools[${i}]`, pool })),
    ...eipPools.map((pool, i) => ({ key: `eip_pools[${i}]`, pool })),
  ]);
  const projects = (file.projects ?? []).map((section) => ({
    name: section.name,
    apiKeySha256: section.api_key_sha256.toLowerCase(),
    quota: section.quota ?? DEFAULT_QUOTA,
  }));
  checkUniqueNames(projects, "projects");
  checkUniqueKeys(projects);
  const hosts = (file.hosts ?? []).map(toHost);
  checkUniqueNames(hosts, "hosts");
  const listen = parseListen(server.listen ?? "127.0.0.1:8080");
  const socket = server.socket === "" ? null : (server.socket ?? "/run/ippool/ippool.sock");
  if (!listen && !socket) throw new ConfigError('server.listen and server.socket are both "": nothing to serve on');
  if (server.open_pool_api && server.admin_key_sha256 !== undefined) {
    throw new ConfigError("server.open_pool_api: an open pool API takes no admin key; drop one of the two settings");
  }
  return Object.freeze({
    listen,
    socket,
    dataDir: server.data_dir ?? "/var/lib/ippool",
    store: storeConfig(file.store ?? {}),
    adminKeySha256: server.admin_key_sha256?.toLowerCase() ?? null,
    openPoolApi: server.open_pool_api ?? false,
    logFormat: server.log_format ?? "text",
    logLevel: server.log_level ?? "info",
    pools: Object.freeze(pools),
    defaultPool: defaultPoolOf(file.pools ?? [], "pools") as string,
    eipPools: Object.freeze(eipPools),
    defaultEipPool: defaultPoolOf(file.eip_pools ?? [], "eip_pools"),
    projects: Object.freeze(projects),
    hosts: Object.freeze(hosts),
    reconcileIntervalS: file.reconcile?.interval_s ?? DEFAULT_RECONCILE_INTERVAL_S,
    leakGracePeriodS: file.leaks?.grace_period_s ?? DEFAULT_LEAK_GRACE_PERIOD_S,
    leakCollectIntervalS: file.leaks?.collect_interval_s ?? DEFAULT_LEAK_COLLECT_INTERVAL_S,
    dhcp: Object.freeze({
      dir: file.dhcp?.dir ?? "/var/lib/ippool-dhcp",
      libvirtRunDir: file.dhcp?.libvirt_run_dir ?? "/run/libvirt/network",
      libvirtLeaseDir: file.dhcp?.libvirt_lease_dir ?? "/var/lib/libvirt/dnsmasq",
      links: Object.freeze(poolLinks(file.pools ?? [])),
    }),
  });
}

function storeConfig(section: StoreSection): StoreConfig {
  if ((section.backend ?? "lmdb") === "lmdb") {
    const fleetOnly = [section.url, section.daemon, section.lease_s, section.timeout_s];
    if (fleetOnly.some((value) => value !== undefined)) {
      throw new ConfigError(
        'store.url, store.daemon, store.lease_s and store.timeout_s are for store.backend = "postgres"',
      );
    }
    return { backend: "lmdb" };
  }
  if (section.url === undefined) {
    throw new ConfigError('store.backend = "postgres" needs the database: store.url, or IPPOOL_DATABASE_URL');
  }
  const daemon = section.daemon ?? hostname();
  if (!new RegExp(DAEMON_NAME_PATTERN).test(daemon)) {
    throw new ConfigError(
      `store.daemon: the host name ${JSON.stringify(daemon)} cannot name this daemon; set store.daemon`,
    );
  }
  return {
    backend: "postgres",
    url: section.url,
    daemon,
    leaseSeconds: section.lease_s ?? DEFAULT_LEASE_S,
    timeoutSeconds: section.timeout_s ?? DEFAULT_TIMEOUT_S,
  };
}

/** Every pool's networks and bridges; one link is served by one pool only. */
function poolLinks(sections: readonly PoolSection[]): PoolLink[] {
  const links: PoolLink[] = [];
  sections.forEach((section, i) => {
    const own = [
      ...(section.networks ?? []).map((name) => ({ kind: "network" as const, name, key: `pools[${i}].networks` })),
      ...(section.bridges ?? []).map((name) => ({ kind: "bridge" as const, name, key: `pools[${i}].bridges` })),
    ];
    for (const { kind, name, key } of own) {
      const taken = links.find((link) => sameLink(link, { kind, name }));
      if (taken) throw new ConfigError(`${key}: ${kind} ${name} is already served by pool ${taken.pool}`);
      links.push({ pool: section.name, kind, name });
    }
  });
  return links;
}

function parseListen(text: string): ListenAddress | null {
  if (text === "") return null;
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new ConfigError(
      `server.listen: expected host:port (e.g. 127.0.0.1:8080) or "" (got ${JSON.stringify(text)})`,
    );
  }
  return { hostname: (match[1] as string).replace(/^\[|\]$/g, ""), port };
}

/** `kind` "eip": public addresses routed to the host as /32s, so no gateway is set aside. */
function validatePool(section: PoolSection, key: string, kind: "vm" | "eip" = "vm"): PoolDefinition {
  const cidr = parseAt(`${key}.cidr`, () => parseCidr(section.cidr));
  if (cidr.prefix < 8)
    throw new ConfigError(`${key}.cidr: prefixes shorter than /8 are not supported (got ${section.cidr})`);
  const gateway =
    kind === "eip"
      ? null
      : section.gateway === undefined
        ? defaultGateway(cidr)
        : parseAt(`${key}.gateway`, () => parseIpv4(section.gateway as string));
  if (gateway !== null) checkGateway(cidr, gateway, `${key}.gateway`);
  const reserved = (section.reserved ?? []).map((text, i) => {
    const range = parseAt(`${key}.reserved[${i}]`, () => parseRange(text));
    checkInside(cidr, range, `${key}.reserved[${i}]`);
    return range;
  });
  const definition: PoolDefinition = {
    name: section.name,
    cidr,
    gateway,
    reserved,
    strategy: section.strategy ?? "next-fit",
  };
  if (new PoolLayout(definition).usableCount === 0) {
    throw new ConfigError(
      `${key}: no usable address is left in ${section.cidr} once the gateway and reserved addresses are taken out`,
    );
  }
  return definition;
}

/** The first host address, the usual gateway; /31 and /32 (RFC 3021) have no room for one. */
function defaultGateway(cidr: Cidr): number | null {
  return cidr.prefix >= 31 ? null : cidr.base + 1;
}

function checkGateway(cidr: Cidr, gateway: number, key: string): void {
  if (!cidrContains(cidr, gateway)) {
    throw new ConfigError(`${key}: ${formatIpv4(gateway)} is outside ${formatCidr(cidr)}`);
  }
  const last = cidr.base + cidr.size - 1;
  if (cidr.prefix <= 30 && (gateway === cidr.base || gateway === last)) {
    throw new ConfigError(`${key}: ${formatIpv4(gateway)} is the network or broadcast address of ${formatCidr(cidr)}`);
  }
}

function checkInside(cidr: Cidr, range: IpRange, key: string): void {
  if (!cidrContains(cidr, range.first) || !cidrContains(cidr, range.last)) {
    throw new ConfigError(
      `${key}: ${formatIpv4(range.first)}-${formatIpv4(range.last)} is not inside ${formatCidr(cidr)}`,
    );
  }
}

/** Pool names are unique within their section; no two pools of any kind share an address. */
function checkDistinct(entries: readonly { key: string; pool: PoolDefinition }[]): void {
  entries.forEach(({ key, pool }, i) => {
    for (const other of entries.slice(0, i)) {
      if (other.pool.name === pool.name && other.key.split("[")[0] === key.split("[")[0]) {
        throw new ConfigError(`${key}.name: "${pool.name}" is already used by ${other.key}`);
      }
      if (cidrsOverlap(other.pool.cidr, pool.cidr)) {
        throw new ConfigError(
          `${key}.cidr: ${formatCidr(pool.cidr)} overlaps ${other.key} ("${other.pool.name}", ${formatCidr(other.pool.cidr)})`,
        );
      }
    }
  });
}

function checkUniqueNames(items: readonly { name: string }[], section: string): void {
  items.forEach((item, i) => {
    const j = items.findIndex((other) => other.name === item.name);
    if (j < i) throw new ConfigError(`${section}[${i}].name: "${item.name}" is already used by ${section}[${j}]`);
  });
}

/** Two projects with one key would make the key name either project. */
function checkUniqueKeys(projects: readonly ProjectDefinition[]): void {
  projects.forEach((project, i) => {
    const j = projects.findIndex((other) => other.apiKeySha256 === project.apiKeySha256);
    if (j < i) throw new ConfigError(`projects[${i}].api_key_sha256: the same key as projects[${j}]`);
  });
}

function toHost(section: HostSection): HostDefinition {
  return {
    name: section.name,
    address: section.address,
    port: section.port ?? 22,
    user: section.user,
    privateKeyPath: section.private_key,
    hostKey: section.host_key,
    libvirtUri: section.libvirt_uri ?? "qemu:///system",
    publicInterface: section.public_interface,
    sudo: section.sudo ?? false,
    connectTimeoutMs: section.connect_timeout_ms ?? 5000,
    commandTimeoutMs: section.command_timeout_ms ?? 10_000,
  };
}

function defaultPoolOf(sections: readonly { name: string; default?: boolean }[], section: string): string | null {
  const marked = sections.flatMap((s, i) => (s.default ? [i] : []));
  if (marked.length > 1)
    throw new ConfigError(`${section}[${marked[1]}].default: only one pool may say default = true`);
  return sections[marked[0] ?? 0]?.name ?? null;
}

function parseAt<T>(key: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new ConfigError(`${key}: ${(error as Error).message}`);
  }
}
