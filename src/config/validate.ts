/**
 * Turns a parsed config document into a `Config`, or throws a `ConfigError` whose one-line
 * message names the key that is wrong.
 */
import { Value } from "@sinclair/typebox/value";
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
import type { Config, ListenAddress } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { ConfigFile, type PoolSection } from "./schema.ts";

/** `/pools/0/cidr` → `pools[0].cidr` */
function keyOf(pointer: string): string {
  return pointer
    .split("/")
    .filter(Boolean)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : i === 0 ? part : `.${part}`))
    .join("");
}

export function validateConfig(document: unknown): Config {
  const error = Value.Errors(ConfigFile, document).First();
  if (error) {
    const key = keyOf(error.path) || "(top level)";
    const detail = error.message === "Unexpected property" ? "unknown key" : error.message.toLowerCase();
    throw new ConfigError(
      `${key}: ${detail}${error.value === undefined ? "" : ` (got ${JSON.stringify(error.value)})`}`,
    );
  }
  const file = document as ConfigFile;
  const server = file.server ?? {};
  const pools = (file.pools ?? []).map((section, i) => validatePool(section, `pools[${i}]`));
  if (pools.length === 0) throw new ConfigError("pools: at least one [[pools]] section is required");
  checkDistinct(pools);
  const listen = parseListen(server.listen ?? "127.0.0.1:8080");
  const socket = server.socket === "" ? null : (server.socket ?? "/run/ippool/ippool.sock");
  if (!listen && !socket) throw new ConfigError('server.listen and server.socket are both "": nothing to serve on');
  return Object.freeze({
    listen,
    socket,
    dataDir: server.data_dir ?? "/var/lib/ippool",
    logFormat: server.log_format ?? "text",
    logLevel: server.log_level ?? "info",
    pools: Object.freeze(pools),
    defaultPool: defaultPoolOf(file.pools ?? []),
  });
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

function validatePool(section: PoolSection, key: string): PoolDefinition {
  const cidr = parseAt(`${key}.cidr`, () => parseCidr(section.cidr));
  if (cidr.prefix < 8)
    throw new ConfigError(`${key}.cidr: prefixes shorter than /8 are not supported (got ${section.cidr})`);
  const gateway =
    section.gateway === undefined
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

function checkDistinct(pools: readonly PoolDefinition[]): void {
  pools.forEach((pool, i) => {
    pools.slice(0, i).forEach((other, j) => {
      if (other.name === pool.name)
        throw new ConfigError(`pools[${i}].name: "${pool.name}" is already used by pools[${j}]`);
      if (cidrsOverlap(other.cidr, pool.cidr)) {
        throw new ConfigError(
          `pools[${i}].cidr: ${formatCidr(pool.cidr)} overlaps pools[${j}] ("${other.name}", ${formatCidr(other.cidr)})`,
        );
      }
    });
  });
}

function defaultPoolOf(sections: readonly PoolSection[]): string {
  const marked = sections.flatMap((s, i) => (s.default ? [i] : []));
  if (marked.length > 1) throw new ConfigError(`pools[${marked[1]}].default: only one pool may say default = true`);
  return (sections[marked[0] ?? 0] as PoolSection).name;
}

function parseAt<T>(key: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new ConfigError(`${key}: ${(error as Error).message}`);
  }
}
