/**
 * IPv4 addresses as unsigned 32-bit numbers, CIDR blocks and inclusive ranges.
 * Pure functions: no I/O, no allocation state.
 */
import { InvalidIpError } from "./errors.ts";

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Parses a canonical dotted quad (no leading zeros, no whitespace) into a uint32. */
export function parseIpv4(text: string): number {
  if (!DOTTED_QUAD.test(text)) throw new InvalidIpError(`invalid IPv4 address: ${JSON.stringify(text)}`);
  const [a, b, c, d] = text.split(".").map(Number) as [number, number, number, number];
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

export function isIpv4(text: string): boolean {
  return DOTTED_QUAD.test(text);
}

export function formatIpv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** An IPv4 block: `base` is the network address, `size` the number of addresses in it. */
export interface Cidr {
  readonly base: number;
  readonly prefix: number;
  readonly size: number;
}

/** Parses `a.b.c.d/n`; the address must be the network address (no host bits set). */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const prefixText = slash < 0 ? "" : text.slice(slash + 1);
  if (!/^(3[0-2]|[12]?\d)$/.test(prefixText)) throw new InvalidIpError(`invalid CIDR: ${JSON.stringify(text)}`);
  const prefix = Number(prefixText);
  const base = parseIpv4(text.slice(0, slash));
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) {
    throw new InvalidIpError(
      `CIDR ${text} has host bits set; the network address is ${formatIpv4(base - (base % size))}`,
    );
  }
  return { base, prefix, size };
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIpv4(cidr.base)}/${cidr.prefix}`;
}

export function cidrContains(cidr: Cidr, ip: number): boolean {
  return ip >= cidr.base && ip < cidr.base + cidr.size;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}

/** An inclusive range of addresses, first ≤ last. */
export interface IpRange {
  readonly first: number;
  readonly last: number;
}

/** Parses `a.b.c.d` or `a.b.c.d-e.f.g.h` (inclusive, first ≤ last). */
export function parseRange(text: string): IpRange {
  const dash = text.indexOf("-");
  if (dash < 0) {
    const ip = parseIpv4(text);
    return { first: ip, last: ip };
  }
  const first = parseIpv4(text.slice(0, dash));
  const last = parseIpv4(text.slice(dash + 1));
  if (last < first) throw new InvalidIpError(`range ${text} ends before it starts`);
  return { first, last };
}

export function formatRange(range: IpRange): string {
  return range.first === range.last ? formatIpv4(range.first) : `${formatIpv4(range.first)}-${formatIpv4(range.last)}`;
}

/** Sorts ranges and merges overlapping or adjacent ones. */
export function mergeRanges(ranges: readonly IpRange[]): IpRange[] {
  const sorted = [...ranges].sort((x, y) => x.first - y.first);
  const merged: IpRange[] = [];
  for (const range of sorted) {
    const last = merged.at(-1);
    if (last && range.first <= last.last + 1) {
      merged[merged.length - 1] = { first: last.first, last: Math.max(last.last, range.last) };
    } else {
      merged.push(range);
    }
  }
  return merged;
}
