/**
 * What the hosts of the crash loop's testbed hold, read independently of the daemon's own parsers
 * (`nft -j` and `ip -j` in the host namespaces), compared with the recorded associations; and the
 * daemon's per-host metrics that tell when reconciliation has run.
 */
import type { Daemon } from "../support/daemon.ts";
import { parseExposition, samplesOf } from "../support/prometheus.ts";
import type { Testbed } from "../support/testbed.ts";
import type { ListedEip } from "./associations.ts";

/** Differences between each host's NAT state and the recorded associations of its VMs (empty: they agree). */
export async function disagreements(bed: Testbed, listed: readonly ListedEip[]): Promise<string[]> {
  const problems: string[] = [];
  for (const host of bed.hosts) {
    const desired = new Map<string, string>();
    for (const r of listed) if (r.host === host.name && r.private_ip) desired.set(r.public_ip, r.private_ip);
    const actual = await readHostNat(bed, host.name);
    const expectedSnat = new Map([...desired].map(([eip, privateIp]) => [privateIp, eip]));
    const compare = (what: string, have: Entries, want: Entries) => {
      const [a, b] = [JSON.stringify(sorted(have)), JSON.stringify(sorted(want))];
      if (a !== b) problems.push(`${host.name} ${what} is ${a}, recorded ${b}`);
    };
    compare("eip_dnat", actual.dnat, desired);
    compare("eip_snat", actual.snat, expectedSnat);
    compare("EIP /32s on eth0", actual.addresses, new Set(desired.keys()));
    if (desired.size > 0 && !actual.rules) problems.push(`${host.name}: table ip ippool lacks its dnat/snat rules`);
  }
  return problems;
}

interface HostNat {
  readonly dnat: Map<string, string>;
  readonly snat: Map<string, string>;
  /** EIP-range /32s on the public interface. */
  readonly addresses: Set<string>;
  /** prerouting holds one dnat rule over @eip_dnat and postrouting one snat rule over @eip_snat. */
  readonly rules: boolean;
}

/** Reads the host's ippool table with nft and its /32s with ip, independently of the daemon's own parser. */
async function readHostNat(bed: Testbed, host: string): Promise<HostNat> {
  const addresses = new Set((await bed.hostAddresses(host)).filter((ip) => ip.startsWith("100.64.0.")));
  const listed = await bed.hostExec(host, ["nft", "-j", "list", "table", "ip", "ippool"]);
  if (listed.code !== 0) {
    if (/No such file or directory/.test(listed.stderr))
      return { dnat: new Map(), snat: new Map(), addresses, rules: false };
    throw new Error(`nft list on ${host} exited ${listed.code}: ${listed.stderr}`);
  }
  const items = (JSON.parse(listed.stdout) as { nftables: Record<string, unknown>[] }).nftables;
  const maps = new Map<string, Map<string, string>>();
  const rules = new Map<string, string[]>();
  for (const item of items) {
    const map = item.map as { name: string; elem?: [string, string][] } | undefined;
    if (map) maps.set(map.name, new Map(map.elem ?? []));
    const rule = item.rule as { chain: string; expr: unknown } | undefined;
    if (rule) rules.set(rule.chain, [...(rules.get(rule.chain) ?? []), JSON.stringify(rule.expr)]);
  }
  const one = (chain: string, verb: string, map: string) => {
    const list = rules.get(chain) ?? [];
    return list.length === 1 && (list[0] as string).includes(`"${verb}"`) && (list[0] as string).includes(`"@${map}"`);
  };
  return {
    dnat: maps.get("eip_dnat") ?? new Map(),
    snat: maps.get("eip_snat") ?? new Map(),
    addresses,
    rules: one("prerouting", "dnat", "eip_dnat") && one("postrouting", "snat", "eip_snat"),
  };
}

type Entries = ReadonlyMap<string, string> | ReadonlySet<string>;

/** Map entries as "key>value", set members as themselves, sorted: comparable as JSON. */
function sorted(value: Entries): string[] {
  if (value instanceof Set) return [...value].sort();
  return [...(value as ReadonlyMap<string, string>)].map(([k, v]) => `${k}>${v}`).sort();
}

/** Per host: ippool_host_up, and successful reconciliation runs since the daemon started. */
export async function hostMetrics(d: Daemon): Promise<{ up: Map<string, number>; runs: Map<string, number> }> {
  const samples = parseExposition(await (await d.fetch("/metrics", { via: "unix" })).text());
  const byHost = (name: string) => new Map(samplesOf(samples, name).map((s) => [s.labels.host as string, s.value]));
  return { up: byHost("ippool_host_up"), runs: byHost("ippool_reconciliation_duration_seconds_count") };
}
