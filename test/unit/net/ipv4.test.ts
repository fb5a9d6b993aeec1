import { describe, expect, test } from "bun:test";
import { InvalidIpError } from "../../../src/net/errors.ts";
import {
  type Cidr,
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIpv4,
  type IpRange,
  isIpv4,
  mergeRanges,
  parseCidr,
  parseIpv4,
  parseRange,
} from "../../../src/net/ipv4.ts";

/** Runs `body` and returns what it threw, failing the test when it does not throw. */
function thrown(body: () => unknown): Error {
  try {
    body();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected an error, none was thrown");
}

describe("parseIpv4 / formatIpv4", () => {
  test.each([
    ["0.0.0.0", 0],
    ["0.0.0.1", 1],
    ["10.0.0.1", 0x0a000001],
    ["172.16.0.255", 0xac1000ff],
    ["192.168.1.100", 0xc0a80164],
    ["127.0.0.1", 0x7f000001],
    ["255.255.255.255", 0xffffffff],
    ["128.0.0.0", 0x80000000],
  ])("%s parses to %i and formats back", (text, value) => {
    expect(parseIpv4(text)).toBe(value);
    expect(formatIpv4(value)).toBe(text);
    expect(isIpv4(text)).toBe(true);
  });

  test("addresses with the top bit set parse to unsigned numbers", () => {
    expect(parseIpv4("200.1.2.3")).toBeGreaterThan(0);
    expect(parseIpv4("255.255.255.255")).toBe(2 ** 32 - 1);
  });

  test.each([
    ["leading zero", "01.2.3.4"],
    ["leading zero in last octet", "1.2.3.04"],
    ["zero-padded octet", "10.000.0.1"],
    ["leading whitespace", " 1.2.3.4"],
    ["trailing whitespace", "1.2.3.4 "],
    ["trailing newline", "1.2.3.4\n"],
    ["octet above 255", "256.0.0.1"],
    ["octet far above 255", "1.2.3.1000"],
    ["negative octet", "1.2.-3.4"],
    ["three octets", "1.2.3"],
    ["five octets", "1.2.3.4.5"],
    ["empty string", ""],
    ["trailing dot", "1.2.3.4."],
    ["empty octet", "1..3.4"],
    ["hex octet", "0x1.2.3.4"],
    ["plus sign", "+1.2.3.4"],
    ["letters", "abc.def.ghi.jkl"],
    ["CIDR suffix", "1.2.3.4/32"],
    ["IPv6", "::1"],
  ])("rejects %s (%p)", (_, text) => {
    const error = thrown(() => parseIpv4(text));
    expect(error).toBeInstanceOf(InvalidIpError);
    expect((error as InvalidIpError).code).toBe("INVALID_IP");
    expect((error as InvalidIpError).status).toBe(400);
    expect(isIpv4(text)).toBe(false);
  });
});

describe("parseCidr", () => {
  test.each([
    ["0.0.0.0/0", 0, 0, 2 ** 32],
    ["10.0.0.0/8", 0x0a000000, 8, 2 ** 24],
    ["172.16.0.0/12", 0xac100000, 12, 2 ** 20],
    ["10.1.0.0/16", 0x0a010000, 16, 65536],
    ["10.0.0.0/19", 0x0a000000, 19, 8192],
    ["10.0.16.0/20", 0x0a001000, 20, 4096],
    ["192.168.1.0/24", 0xc0a80100, 24, 256],
    ["192.168.1.248/29", 0xc0a801f8, 29, 8],
    ["192.168.1.4/30", 0xc0a80104, 30, 4],
    ["192.168.1.6/31", 0xc0a80106, 31, 2],
    ["192.168.1.7/32", 0xc0a80107, 32, 1],
    ["255.255.255.255/32", 0xffffffff, 32, 1],
  ])("%s has base %i, prefix %i and %i addresses", (text, base, prefix, size) => {
    const cidr = parseCidr(text);
    expect(cidr).toEqual({ base, prefix, size });
    expect(formatCidr(cidr)).toBe(text);
  });

  test("every prefix from /0 to /32 parses with 2^(32-n) addresses", () => {
    for (let prefix = 0; prefix <= 32; prefix++) {
      const cidr = parseCidr(`0.0.0.0/${prefix}`);
      expect(cidr.prefix).toBe(prefix);
      expect(cidr.size).toBe(2 ** (32 - prefix));
    }
  });

  test.each([
    ["10.0.0.1/8", "10.0.0.0"],
    ["192.168.1.1/24", "192.168.1.0"],
    ["192.168.1.5/30", "192.168.1.4"],
    ["192.168.1.7/31", "192.168.1.6"],
    ["10.0.31.0/19", "10.0.0.0"],
    ["1.0.0.0/0", "0.0.0.0"],
  ])("%s is rejected because host bits are set, naming network address %s", (text, network) => {
    const error = thrown(() => parseCidr(text));
    expect(error).toBeInstanceOf(InvalidIpError);
    expect(error.message).toContain("host bits");
    expect(error.message).toContain(`the network address is ${network}`);
  });

  test.each([
    ["no prefix", "10.0.0.0"],
    ["empty prefix", "10.0.0.0/"],
    ["prefix above 32", "10.0.0.0/33"],
    ["prefix with leading zero", "10.0.0.0/08"],
    ["negative prefix", "10.0.0.0/-1"],
    ["space before prefix", "10.0.0.0/ 8"],
    ["two slashes", "10.0.0.0/8/8"],
    ["bad address", "10.0.0.256/32"],
    ["address with leading zero", "10.0.0.01/32"],
    ["garbage", "not-a-cidr"],
    ["empty string", ""],
  ])("rejects %s (%p)", (_, text) => {
    expect(() => parseCidr(text)).toThrow(InvalidIpError);
  });
});

describe("cidrContains / cidrsOverlap", () => {
  const net24 = parseCidr("10.0.0.0/24");

  test.each([
    ["10.0.0.0", true],
    ["10.0.0.255", true],
    ["10.0.0.128", true],
    ["9.255.255.255", false],
    ["10.0.1.0", false],
  ])("10.0.0.0/24 contains %s: %p", (ip, expected) => {
    expect(cidrContains(net24, parseIpv4(ip))).toBe(expected);
  });

  test.each([
    ["10.0.0.0/24", "10.0.0.0/24", true],
    ["10.0.0.0/8", "10.200.3.0/24", true],
    ["10.200.3.0/24", "10.0.0.0/8", true],
    ["10.0.0.0/24", "10.0.1.0/24", false],
    ["10.0.0.0/25", "10.0.0.128/25", false],
    ["10.0.0.0/23", "10.0.1.0/24", true],
    ["10.0.0.4/30", "10.0.0.7/32", true],
    ["10.0.0.4/30", "10.0.0.8/32", false],
    ["0.0.0.0/0", "255.255.255.255/32", true],
  ])("%s and %s overlap: %p", (a, b, expected) => {
    const x: Cidr = parseCidr(a);
    const y: Cidr = parseCidr(b);
    expect(cidrsOverlap(x, y)).toBe(expected);
    expect(cidrsOverlap(y, x)).toBe(expected);
  });
});

describe("parseRange", () => {
  test("a single address is a range of one", () => {
    expect(parseRange("10.0.0.5")).toEqual({ first: 0x0a000005, last: 0x0a000005 });
  });

  test("a dash-separated pair is an inclusive range", () => {
    expect(parseRange("10.0.0.5-10.0.0.9")).toEqual({ first: 0x0a000005, last: 0x0a000009 });
  });

  test("a range may start and end on the same address", () => {
    expect(parseRange("10.0.0.5-10.0.0.5")).toEqual({ first: 0x0a000005, last: 0x0a000005 });
  });

  test("a range may span octets", () => {
    expect(parseRange("10.0.15.250-10.0.16.3")).toEqual({ first: 0x0a000ffa, last: 0x0a001003 });
  });

  test("a reversed range is rejected", () => {
    const error = thrown(() => parseRange("10.0.0.9-10.0.0.5"));
    expect(error).toBeInstanceOf(InvalidIpError);
    expect(error.message).toContain("ends before it starts");
  });

  test.each([
    ["spaces around the dash", "10.0.0.1 - 10.0.0.5"],
    ["missing end", "10.0.0.1-"],
    ["missing start", "-10.0.0.1"],
    ["two dashes", "10.0.0.1-10.0.0.2-10.0.0.3"],
    ["CIDR notation", "10.0.0.0/30"],
    ["garbage", "ten to twenty"],
  ])("rejects %s (%p)", (_, text) => {
    expect(() => parseRange(text)).toThrow(InvalidIpError);
  });
});

describe("mergeRanges", () => {
  const r = (first: number, last: number): IpRange => ({ first, last });

  test.each<[string, IpRange[], IpRange[]]>([
    ["nothing", [], []],
    ["a single range", [r(5, 9)], [r(5, 9)]],
    ["overlapping ranges", [r(1, 5), r(3, 8)], [r(1, 8)]],
    ["a range inside another", [r(1, 10), r(3, 4)], [r(1, 10)]],
    ["adjacent ranges", [r(1, 4), r(5, 8)], [r(1, 8)]],
    ["adjacent single addresses", [r(0, 0), r(1, 1), r(2, 2)], [r(0, 2)]],
    ["disjoint ranges", [r(1, 2), r(4, 5)], [r(1, 2), r(4, 5)]],
    ["unsorted disjoint ranges", [r(20, 30), r(1, 2), r(10, 12)], [r(1, 2), r(10, 12), r(20, 30)]],
    [
      "unsorted overlapping and adjacent ranges",
      [r(9, 12), r(0, 0), r(5, 8), r(6, 7), r(255, 255)],
      [r(0, 0), r(5, 12), r(255, 255)],
    ],
    ["duplicates", [r(3, 3), r(3, 3)], [r(3, 3)]],
    [
      "ranges at the top of the address space",
      [r(0xfffffffe, 0xffffffff), r(0xfffffff0, 0xfffffffd)],
      [r(0xfffffff0, 0xffffffff)],
    ],
  ])("merges %s", (_, input, expected) => {
    expect(mergeRanges(input)).toEqual(expected);
  });

  test("does not modify its input", () => {
    const input = [r(5, 6), r(1, 2)];
    mergeRanges(input);
    expect(input).toEqual([r(5, 6), r(1, 2)]);
  });
});
