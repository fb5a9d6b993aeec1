import { describe, expect, test } from "bun:test";
import { type IpRange, parseIpv4 } from "../../../src/net/ipv4.ts";
import { emptyPage, PAGE_BITS, setBit, setBitRange, testBit } from "../../../src/pool/bitmap.ts";
import type { PoolLayout } from "../../../src/pool/layout.ts";
import { type PoolOptions, poolLayout } from "../../support/store-fixture.ts";

/** Unlike the config (and `poolLayout`), no gateway unless one is given. */
function layoutOf(cidr: string, options: PoolOptions & { name?: string } = {}): PoolLayout {
  return poolLayout(options.name ?? "test", cidr, { ...options, gateway: options.gateway ?? null });
}

function maskBits(mask: Uint32Array | null): number[] {
  if (!mask) return [];
  const bits: number[] = [];
  for (let bit = 0; bit < PAGE_BITS; bit++) if (testBit(mask, bit)) bits.push(bit);
  return bits;
}

describe("usableCount", () => {
  test.each<[string, string | null, number]>([
    ["10.0.0.0/24", "10.0.0.1", 253],
    ["10.0.0.0/24", null, 254],
    ["10.0.0.0/29", "10.0.0.1", 5],
    ["10.0.0.0/30", "10.0.0.1", 1],
    ["10.0.0.0/30", null, 2],
    ["10.0.0.0/31", null, 2],
    ["10.0.0.0/31", "10.0.0.0", 1],
    ["10.0.0.5/32", null, 1],
    ["10.0.0.0/19", "10.0.0.1", 8189],
    ["10.0.0.0/16", "10.0.0.1", 65533],
    ["10.0.0.0/8", "10.0.0.1", 2 ** 24 - 3],
  ])("%s with gateway %p has %i usable addresses", (cidr, gateway, expected) => {
    expect(layoutOf(cidr, { gateway }).usableCount).toBe(expected);
  });

  test("reserved ranges reduce the usable count, overlaps counted once", () => {
    const layout = layoutOf("10.0.0.0/24", {
      gateway: "10.0.0.1",
      reserved: ["10.0.0.10-10.0.0.19", "10.0.0.15-10.0.0.24", "10.0.0.1", "10.0.0.255"],
    });
    // network, broadcast, gateway, plus .10-.24 (15)
    expect(layout.usableCount).toBe(256 - 3 - 15);
  });
});

describe("unusable ordinals", () => {
  test("a /24 reserves its network, gateway and broadcast ordinals", () => {
    const layout = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" });
    expect(layout.unusable).toEqual([
      { first: 0, last: 1 },
      { first: 255, last: 255 },
    ]);
    expect(layout.isUnusable(0)).toBe(true);
    expect(layout.isUnusable(1)).toBe(true);
    expect(layout.isUnusable(2)).toBe(false);
    expect(layout.isUnusable(254)).toBe(false);
    expect(layout.isUnusable(255)).toBe(true);
  });

  test("a /31 has no network or broadcast address (RFC 3021)", () => {
    const layout = layoutOf("10.0.0.0/31");
    expect(layout.unusable).toEqual([]);
    expect(layout.isUnusable(0)).toBe(false);
    expect(layout.isUnusable(1)).toBe(false);
  });

  test("a /32 has its one address usable", () => {
    const layout = layoutOf("10.0.0.7/32");
    expect(layout.unusable).toEqual([]);
    expect(layout.usableCount).toBe(1);
    expect(layout.ipAt(0)).toBe(parseIpv4("10.0.0.7"));
  });

  test("reserved ranges are stored as ordinals relative to the network address", () => {
    const layout = layoutOf("10.0.1.0/24", { gateway: "10.0.1.254", reserved: ["10.0.1.100-10.0.1.102"] });
    const expected: IpRange[] = [
      { first: 0, last: 0 },
      { first: 100, last: 102 },
      { first: 254, last: 255 },
    ];
    expect(layout.unusable).toEqual(expected);
  });
});

describe("ordinals and addresses", () => {
  const layout = layoutOf("192.168.4.0/22", { gateway: "192.168.4.1" });

  test("ordinalOf and ipAt are inverse", () => {
    for (const ordinal of [0, 1, 255, 256, 1023]) expect(layout.ordinalOf(layout.ipAt(ordinal))).toBe(ordinal);
    expect(layout.ipAt(256)).toBe(parseIpv4("192.168.5.0"));
  });

  test("contains only addresses inside the CIDR", () => {
    expect(layout.contains(parseIpv4("192.168.4.0"))).toBe(true);
    expect(layout.contains(parseIpv4("192.168.7.255"))).toBe(true);
    expect(layout.contains(parseIpv4("192.168.8.0"))).toBe(false);
    expect(layout.contains(parseIpv4("192.168.3.255"))).toBe(false);
  });

  test("network is the CIDR text", () => {
    expect(layout.network).toBe("192.168.4.0/22");
  });

  test("describeOrdinalRange names one address or a range", () => {
    expect(layout.describeOrdinalRange({ first: 5, last: 5 })).toBe("192.168.4.5");
    expect(layout.describeOrdinalRange({ first: 255, last: 257 })).toBe("192.168.4.255-192.168.5.1");
  });
});

describe("pages", () => {
  test.each([
    ["10.0.0.5/32", 1],
    ["10.0.0.0/24", 1],
    ["10.0.0.0/20", 1],
    ["10.0.0.0/19", 2],
    ["10.0.0.0/16", 16],
    ["10.0.0.0/8", 4096],
  ])("%s spans %i pages", (cidr, pages) => {
    expect(layoutOf(cidr).pageCount).toBe(pages);
  });

  test.each([
    ["10.0.0.5/32", 0, 1],
    ["10.0.0.0/31", 0, 2],
    ["10.0.0.0/29", 0, 8],
    ["10.0.0.0/24", 0, 256],
    ["10.0.0.0/20", 0, 4096],
    ["10.0.0.0/19", 1, 4096],
  ])("%s page %i has %i valid bits", (cidr, index, bits) => {
    expect(layoutOf(cidr).bitsInPage(index)).toBe(bits);
  });
});

describe("reservedMask", () => {
  test("marks network, gateway and broadcast of a /24", () => {
    const layout = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" });
    expect(maskBits(layout.reservedMask(0))).toEqual([0, 1, 255]);
  });

  test("is null for a page with nothing reserved", () => {
    expect(layoutOf("10.0.0.0/31").reservedMask(0)).toBeNull();
    // the middle pages of a /18 hold neither network, gateway nor broadcast
    const layout = layoutOf("10.0.0.0/18", { gateway: "10.0.0.1" });
    expect(layout.reservedMask(1)).toBeNull();
    expect(layout.reservedMask(2)).toBeNull();
    expect(maskBits(layout.reservedMask(3))).toEqual([4095]);
  });

  test("a reserved range crossing a page boundary is split over both pages", () => {
    // /19: page 0 is ordinals 0..4095 (10.0.0.0-10.0.15.255), page 1 is 4096..8191
    const layout = layoutOf("10.0.0.0/19", { gateway: "10.0.0.1", reserved: ["10.0.15.250-10.0.16.5"] });
    expect(layout.ordinalOf(parseIpv4("10.0.15.250"))).toBe(4090);
    expect(layout.ordinalOf(parseIpv4("10.0.16.5"))).toBe(4101);
    expect(maskBits(layout.reservedMask(0))).toEqual([0, 1, 4090, 4091, 4092, 4093, 4094, 4095]);
    expect(maskBits(layout.reservedMask(1))).toEqual([0, 1, 2, 3, 4, 5, 4095]);
  });

  test("a reserved range covering a whole middle page fills its mask", () => {
    const layout = layoutOf("10.0.0.0/18", { gateway: "10.0.0.1", reserved: ["10.0.15.0-10.0.32.9"] });
    expect(maskBits(layout.reservedMask(1))).toHaveLength(PAGE_BITS);
    expect(maskBits(layout.reservedMask(2))).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(maskBits(layout.reservedMask(0))).toEqual([0, 1, ...Array.from({ length: 256 }, (_, i) => 3840 + i)]);
  });

  test("is cached: the same page gives the same mask object", () => {
    const layout = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" });
    expect(layout.reservedMask(0)).toBe(layout.reservedMask(0));
  });
});

describe("pageHasFree / allocatedInPage", () => {
  test("a /30 with a gateway has one free address until it is taken", () => {
    const layout = layoutOf("10.0.0.0/30", { gateway: "10.0.0.1" });
    const page = emptyPage();
    expect(layout.pageHasFree(0, page)).toBe(true);
    setBit(page, 2);
    expect(layout.pageHasFree(0, page)).toBe(false);
    expect(layout.allocatedInPage(0, page)).toBe(1);
  });

  test("bits past the end of a partial page are never counted as free", () => {
    const layout = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" });
    const page = emptyPage();
    setBitRange(page, 2, 254);
    expect(layout.pageHasFree(0, page)).toBe(false);
    expect(layout.allocatedInPage(0, page)).toBe(253);
  });

  test("allocatedInPage ignores bits under the reserved mask", () => {
    const layout = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" });
    const page = emptyPage();
    setBitRange(page, 0, 9);
    expect(layout.allocatedInPage(0, page)).toBe(8);
  });

  test("a full first page of a /19 has no free address while the second does", () => {
    const layout = layoutOf("10.0.0.0/19", { gateway: "10.0.0.1" });
    const full = emptyPage();
    setBitRange(full, 2, 4095);
    expect(layout.pageHasFree(0, full)).toBe(false);
    expect(layout.pageHasFree(1, emptyPage())).toBe(true);
  });
});

describe("fingerprint", () => {
  const base = layoutOf("10.0.0.0/24", { gateway: "10.0.0.1", reserved: ["10.0.0.10-10.0.0.20"] });

  test("is the same for the same definition", () => {
    expect(layoutOf("10.0.0.0/24", { gateway: "10.0.0.1", reserved: ["10.0.0.10-10.0.0.20"] }).fingerprint).toBe(
      base.fingerprint,
    );
  });

  test.each<[string, PoolLayout]>([
    [
      "a reserved range is added",
      layoutOf("10.0.0.0/24", { gateway: "10.0.0.1", reserved: ["10.0.0.10-10.0.0.20", "10.0.0.30"] }),
    ],
    ["a reserved range grows", layoutOf("10.0.0.0/24", { gateway: "10.0.0.1", reserved: ["10.0.0.10-10.0.0.21"] })],
    ["reserved ranges are removed", layoutOf("10.0.0.0/24", { gateway: "10.0.0.1" })],
    ["the gateway moves", layoutOf("10.0.0.0/24", { gateway: "10.0.0.254", reserved: ["10.0.0.10-10.0.0.20"] })],
    ["the CIDR changes", layoutOf("10.0.1.0/24", { gateway: "10.0.1.1", reserved: ["10.0.1.10-10.0.1.20"] })],
    ["the prefix changes", layoutOf("10.0.0.0/23", { gateway: "10.0.0.1", reserved: ["10.0.0.10-10.0.0.20"] })],
  ])("changes when %s", (_, changed) => {
    expect(changed.fingerprint).not.toBe(base.fingerprint);
  });

  test("does not change with the strategy or the name, which do not shape the bitmap", () => {
    const other = layoutOf("10.0.0.0/24", {
      gateway: "10.0.0.1",
      reserved: ["10.0.0.10-10.0.0.20"],
      strategy: "lowest",
      name: "other",
    });
    expect(other.fingerprint).toBe(base.fingerprint);
  });

  test("equivalent reserved lists (split or reordered) give the same fingerprint", () => {
    const split = layoutOf("10.0.0.0/24", {
      gateway: "10.0.0.1",
      reserved: ["10.0.0.16-10.0.0.20", "10.0.0.10-10.0.0.15"],
    });
    expect(split.fingerprint).toBe(base.fingerprint);
  });
});
