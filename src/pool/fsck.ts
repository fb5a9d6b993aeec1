/**
 * Consistency check of stored pools against their layouts: every set bit has exactly one
 * address record and allocation, every allocation has its bit, no address is held twice,
 * nothing reserved is allocated, counters and summaries match, every VM name stands for a VM that
 * carries it. Read-only.
 */
import { formatIpv4 } from "../net/ipv4.ts";
import { findClear, findSet, PAGE_BITS, testBit } from "./bitmap.ts";
import type { PoolLayout } from "./layout.ts";
import type { PoolStore } from "./store.ts";

export interface PoolReport {
  readonly pool: string;
  readonly allocations: number;
  readonly problems: string[];
}

export function checkPool(store: PoolStore, layout: PoolLayout): PoolReport {
  const problems: string[] = [];
  const pool = layout.name;
  const counters = store.getCounters(pool);
  if (!counters) return { pool, allocations: 0, problems: ["no stored counters"] };
  const summary = store.getSummary(pool);
  let bits = 0;
  for (const index of store.pageIndexes(pool)) {
    const page = store.getPage(pool, index) as Uint32Array;
    for (let bit = findSet(page, 0, PAGE_BITS); bit >= 0; bit = findSet(page, bit + 1, PAGE_BITS)) {
      bits++;
      const ip = layout.ipAt(index * PAGE_BITS + bit);
      if (store.vmAt(pool, ip) === undefined) problems.push(`${formatIpv4(ip)}: bit set but no address record`);
      if (layout.isUnusable(index * PAGE_BITS + bit)) problems.push(`${formatIpv4(ip)}: reserved but allocated`);
    }
    const hasFree = findClear(page, layout.reservedMask(index), 0, layout.bitsInPage(index)) >= 0;
    if (summary && testBit(summary, index) !== hasFree) problems.push(`summary bit of page ${index} is ${!hasFree}`);
  }
  const seen = new Map<number, string>();
  let allocations = 0;
  for (const { vmId, record } of store.allocationEntries(pool)) {
    allocations++;
    const ip = formatIpv4(record.ip);
    const other = seen.get(record.ip);
    if (other !== undefined) problems.push(`${ip}: held by both ${other} and ${vmId}`);
    seen.set(record.ip, vmId);
    if (!layout.contains(record.ip)) problems.push(`${vmId}: ${ip} is outside ${layout.network}`);
    if (store.vmAt(pool, record.ip) !== vmId)
      problems.push(`${vmId}: address record of ${ip} names ${store.vmAt(pool, record.ip)}`);
    const ordinal = layout.ordinalOf(record.ip);
    const page = store.getPage(pool, Math.floor(ordinal / PAGE_BITS));
    if (!page || !testBit(page, ordinal % PAGE_BITS)) problems.push(`${vmId}: bit of ${ip} is not set`);
    if (record.name !== undefined && store.vmNamed(pool, record.name) === undefined)
      problems.push(`${vmId}: its name ${JSON.stringify(record.name)} finds no VM`);
  }
  for (const { name, vmId } of store.vmNames(pool)) {
    if (store.getAllocation(pool, vmId)?.name !== name)
      problems.push(`name ${JSON.stringify(name)} stands for ${vmId}, whose allocation does not carry it`);
  }
  for (const { ip, vmId } of store.addresses(pool, layout.cidr.base, layout.cidr.base + layout.cidr.size - 1)) {
    if (store.getAllocation(pool, vmId)?.ip !== ip)
      problems.push(`${formatIpv4(ip)}: address record names ${vmId}, who does not hold it`);
  }
  if (bits !== allocations) problems.push(`${bits} bits set but ${allocations} allocations`);
  if (counters.allocated !== allocations)
    problems.push(`counter says ${counters.allocated} allocated but ${allocations} allocations exist`);
  return { pool, allocations, problems };
}
