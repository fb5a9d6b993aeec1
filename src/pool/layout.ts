/**
 * The geometry of one pool: how its addresses map to ordinals, pages and bits, and which
 * ordinals are never handed out. Pure and derived from configuration only.
 */
import {
  type Cidr,
  cidrContains,
  formatCidr,
  formatIpv4,
  formatRange,
  type IpRange,
  mergeRanges,
} from "../net/ipv4.ts";
import { emptyPage, findClear, PAGE_BITS, PAGE_WORDS, popcount, setBitRange } from "./bitmap.ts";

export type Strategy = "next-fit" | "lowest";

export interface PoolDefinition {
  readonly name: string;
  readonly cidr: Cidr;
  /** Absent only for /31 and /32 pools, which have no room for one. */
  readonly gateway: number | null;
  readonly reserved: readonly IpRange[];
  readonly strategy: Strategy;
}

export class PoolLayout {
  readonly name: string;
  readonly cidr: Cidr;
  readonly gateway: number | null;
  readonly strategy: Strategy;
  /** The configured reservations, as absolute address ranges. */
  readonly reserved: readonly IpRange[];
  readonly pageCount: number;
  /** Ordinal ranges never handed out, merged and sorted. */
  readonly unusable: readonly IpRange[];
  readonly usableCount: number;
  /** Identifies everything that shapes the bitmap; stored beside the pool's state. */
  readonly fingerprint: string;
  /** The CIDR and the gateway as text, formatted once: every allocation's answer carries them. */
  readonly network: string;
  readonly gatewayText: string | null;
  private readonly masks = new Map<number, Uint32Array | null>();

  constructor(definition: PoolDefinition) {
    this.name = definition.name;
    this.cidr = definition.cidr;
    this.gateway = definition.gateway;
    this.strategy = definition.strategy;
    this.reserved = definition.reserved;
    this.pageCount = Math.ceil(this.cidr.size / PAGE_BITS);
    this.unusable = mergeRanges(this.unusableOrdinals(definition));
    this.usableCount = this.cidr.size - this.unusable.reduce((sum, r) => sum + r.last - r.first + 1, 0);
    this.network = formatCidr(this.cidr);
    this.gatewayText = this.gateway === null ? null : formatIpv4(this.gateway);
    this.fingerprint = JSON.stringify({
      cidr: this.network,
      unusable: this.unusable.map((r) => [r.first, r.last]),
    });
  }

  contains(ip: number): boolean {
    return cidrContains(this.cidr, ip);
  }

  ordinalOf(ip: number): number {
    return ip - this.cidr.base;
  }

  ipAt(ordinal: number): number {
    return this.cidr.base + ordinal;
  }

  /** Number of valid bits in page `index` (the last page of a small pool is partial). */
  bitsInPage(index: number): number {
    return Math.min(PAGE_BITS, this.cidr.size - index * PAGE_BITS);
  }

  isUnusable(ordinal: number): boolean {
    return this.unusable.some((r) => ordinal >= r.first && ordinal <= r.last);
  }

  /** Bits of page `index` that are never free, or null when the page has none. Cached. */
  reservedMask(index: number): Uint32Array | null {
    const cached = this.masks.get(index);
    if (cached !== undefined) return cached;
    const pageFirst = index * PAGE_BITS;
    const pageLast = pageFirst + PAGE_BITS - 1;
    let mask: Uint32Array | null = null;
    for (const range of this.unusable) {
      if (range.last < pageFirst || range.first > pageLast) continue;
      mask ??= emptyPage();
      setBitRange(mask, Math.max(range.first, pageFirst) - pageFirst, Math.min(range.last, pageLast) - pageFirst);
    }
    this.masks.set(index, mask);
    return mask;
  }

  /** Whether a page with these allocation bits still has a free address. */
  pageHasFree(index: number, words: Uint32Array): boolean {
    return findClear(words, this.reservedMask(index), 0, this.bitsInPage(index)) >= 0;
  }

  /** Allocated bits of a page that are not reserved (reserved bits are never allocated). */
  allocatedInPage(index: number, words: Uint32Array): number {
    const mask = this.reservedMask(index);
    let count = 0;
    for (let w = 0; w < PAGE_WORDS; w++) count += popcount((words[w] as number) & ~(mask ? (mask[w] as number) : 0));
    return count;
  }

  describeOrdinalRange(range: IpRange): string {
    return formatRange({ first: this.ipAt(range.first), last: this.ipAt(range.last) });
  }

  private unusableOrdinals(definition: PoolDefinition): IpRange[] {
    const { cidr } = definition;
    const ranges: IpRange[] = [];
    // RFC 3021: /31 and /32 have no network or broadcast address.
    if (cidr.prefix <= 30) ranges.push({ first: 0, last: 0 }, { first: cidr.size - 1, last: cidr.size - 1 });
    if (definition.gateway !== null) {
      const gw = definition.gateway - cidr.base;
      ranges.push({ first: gw, last: gw });
    }
    for (const r of definition.reserved) ranges.push({ first: r.first - cidr.base, last: r.last - cidr.base });
    return ranges;
  }
}
