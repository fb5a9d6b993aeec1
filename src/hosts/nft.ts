/**
 * The text of ippool's nftables transactions and the parsing of what `nft -j` and `ip -j` report.
 * Pure functions; `nat.ts` runs them on the host.
 *
 * ippool owns one table, `ip ippool`:
 *   map eip_dnat { type ipv4_addr : ipv4_addr }   EIP → private IP
 *   map eip_snat { type ipv4_addr : ipv4_addr }   private IP → EIP
 *   chain prerouting  (nat, dstnat):  dnat to ip daddr map @eip_dnat
 *   chain postrouting (nat, srcnat):  snat to ip saddr map @eip_snat
 * No other table is ever read or written.
 */
import { validIpv4 } from "./command.ts";
import type { Association } from "./nft-plan.ts";

export const TABLE = "ippool";

/** Creates whatever is missing and re-creates the two rules (flush + add in one transaction: no gap). */
const ENSURE = [
  `add table ip ${TABLE}`,
  `add map ip ${TABLE} eip_dnat { type ipv4_addr : ipv4_addr; }`,
  `add map ip ${TABLE} eip_snat { type ipv4_addr : ipv4_addr; }`,
  `add chain ip ${TABLE} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
  `add chain ip ${TABLE} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
  `flush chain ip ${TABLE} prerouting`,
  `flush chain ip ${TABLE} postrouting`,
  `add rule ip ${TABLE} prerouting dnat to ip daddr map @eip_dnat`,
  `add rule ip ${TABLE} postrouting snat to ip saddr map @eip_snat`,
];

export interface ElementChanges {
  /** Keys (EIPs) to delete from eip_dnat; each must exist. */
  readonly dnatDelete: readonly string[];
  readonly dnatAdd: readonly Association[];
  /** Keys (private IPs) to delete from eip_snat; each must exist. */
  readonly snatDelete: readonly string[];
  readonly snatAdd: readonly Association[];
}

/**
 * One `nft -f -` transaction: optionally (re)create the table, maps, chains and rules, then delete
 * and add elements. Deletes come first, so a key can be deleted and re-added with a new value. Every
 * address is validated here again; one command per line.
 */
export function nftTransaction(changes: ElementChanges, ensure: boolean): string {
  const lines = ensure ? [...ENSURE] : [];
  for (const eip of changes.dnatDelete) lines.push(`delete element ip ${TABLE} eip_dnat { ${validIpv4(eip)} }`);
  for (const p of changes.snatDelete) lines.push(`delete element ip ${TABLE} eip_snat { ${validIpv4(p)} }`);
  for (const a of changes.dnatAdd) {
    lines.push(`add element ip ${TABLE} eip_dnat { ${validIpv4(a.eip)} : ${validIpv4(a.privateIp)} }`);
  }
  for (const a of changes.snatAdd) {
    lines.push(`add element ip ${TABLE} eip_snat { ${validIpv4(a.privateIp)} : ${validIpv4(a.eip)} }`);
  }
  return `${lines.join("\n")}\n`;
}

export interface NftTableState {
  /** The table exists at all. */
  readonly exists: boolean;
  /** Both maps and both chains exist, and each chain holds exactly ippool's one rule. */
  readonly intact: boolean;
  readonly dnat: Association[];
  readonly snat: Association[];
}

export const EMPTY_TABLE: NftTableState = { exists: false, intact: false, dnat: [], snat: [] };

/** Parses `nft -j list table ip ippool`. */
export function parseNftTable(json: string): NftTableState {
  const items = (JSON.parse(json) as { nftables?: Record<string, unknown>[] }).nftables ?? [];
  const maps = new Map<string, [string, string][]>();
  const chains = new Set<string>();
  const rules = new Map<string, string[]>();
  let exists = false;
  for (const item of items) {
    if ("table" in item) exists = true;
    const map = item.map as { name?: string; elem?: unknown[] } | undefined;
    if (map?.name) maps.set(map.name, (map.elem ?? []).flatMap(pairOf));
    const chain = item.chain as { name?: string; type?: string; hook?: string } | undefined;
    if (chain?.name && chain.type === "nat") chains.add(`${chain.name}/${chain.hook}`);
    const rule = item.rule as { chain?: string; expr?: unknown } | undefined;
    if (rule?.chain) rules.set(rule.chain, [...(rules.get(rule.chain) ?? []), JSON.stringify(rule.expr ?? null)]);
  }
  const ruleIs = (chain: string, verb: string, map: string) => {
    const list = rules.get(chain) ?? [];
    return list.length === 1 && (list[0] as string).includes(`"${verb}"`) && (list[0] as string).includes(`"@${map}"`);
  };
  const intact =
    maps.has("eip_dnat") &&
    maps.has("eip_snat") &&
    chains.has("prerouting/prerouting") &&
    chains.has("postrouting/postrouting") &&
    ruleIs("prerouting", "dnat", "eip_dnat") &&
    ruleIs("postrouting", "snat", "eip_snat");
  return {
    exists,
    intact,
    dnat: (maps.get("eip_dnat") ?? []).map(([eip, privateIp]) => ({ eip, privateIp })),
    snat: (maps.get("eip_snat") ?? []).map(([privateIp, eip]) => ({ eip, privateIp })),
  };
}

/** A map element in nft's JSON: `["k", "v"]`; anything else (ranges, concatenations) is not ippool's and is skipped. */
function pairOf(elem: unknown): [string, string][] {
  if (Array.isArray(elem) && typeof elem[0] === "string" && typeof elem[1] === "string") return [[elem[0], elem[1]]];
  return [];
}

/** Parses `ip -j -4 addr show dev IF`: the /32 addresses on it. */
export function parseAddresses(json: string): string[] {
  const links = JSON.parse(json || "[]") as { addr_info?: { family?: string; local?: string; prefixlen?: number }[] }[];
  return links.flatMap((link) =>
    (link.addr_info ?? [])
      .filter((a) => a.family === "inet" && a.prefixlen === 32 && typeof a.local === "string")
      .map((a) => a.local as string),
  );
}
