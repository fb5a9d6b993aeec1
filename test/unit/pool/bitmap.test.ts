import { describe, expect, test } from "bun:test";
import {
  clearBit,
  emptyPage,
  findClear,
  findSet,
  findSetCircular,
  PAGE_BITS,
  PAGE_BYTES,
  PAGE_WORDS,
  pageFromBytes,
  pageToBytes,
  popcount,
  setBit,
  setBitRange,
  testBit,
} from "../../../src/pool/bitmap.ts";

/** A page with every bit in `[first, last]` set. */
function pageWith(first: number, last: number): Uint32Array {
  const page = emptyPage();
  setBitRange(page, first, last);
  return page;
}

function setBits(words: Uint32Array): number[] {
  const bits: number[] = [];
  for (let bit = 0; bit < words.length * 32; bit++) if (testBit(words, bit)) bits.push(bit);
  return bits;
}

describe("page geometry", () => {
  test("a page is 4096 bits in 128 words, 512 bytes", () => {
    expect(PAGE_BITS).toBe(4096);
    expect(PAGE_WORDS).toBe(128);
    expect(PAGE_BYTES).toBe(512);
    expect(emptyPage()).toHaveLength(PAGE_WORDS);
    expect(setBits(emptyPage())).toEqual([]);
  });
});

describe("setBit / clearBit / testBit", () => {
  test.each([0, 1, 30, 31, 32, 33, 63, 64, 2047, 4094, 4095])("bit %i can be set and cleared alone", (bit) => {
    const page = emptyPage();
    setBit(page, bit);
    expect(testBit(page, bit)).toBe(true);
    expect(setBits(page)).toEqual([bit]);
    clearBit(page, bit);
    expect(testBit(page, bit)).toBe(false);
    expect(setBits(page)).toEqual([]);
  });

  test("bit i lives in word i >>> 5 at position i & 31", () => {
    const page = emptyPage();
    setBit(page, 37);
    setBit(page, 31);
    expect(page[1]).toBe(1 << 5);
    expect(page[0]).toBe(0x80000000);
  });

  test("setting a bit twice keeps it set; clearing a clear bit keeps it clear", () => {
    const page = emptyPage();
    setBit(page, 7);
    setBit(page, 7);
    expect(setBits(page)).toEqual([7]);
    clearBit(page, 8);
    expect(setBits(page)).toEqual([7]);
  });

  test("clearing one bit leaves its neighbours set", () => {
    const page = pageWith(0, 95);
    clearBit(page, 31);
    clearBit(page, 32);
    expect(testBit(page, 30)).toBe(true);
    expect(testBit(page, 31)).toBe(false);
    expect(testBit(page, 32)).toBe(false);
    expect(testBit(page, 33)).toBe(true);
    expect(setBits(page)).toHaveLength(94);
  });
});

describe("findClear", () => {
  test("an empty page's first clear bit is 0", () => {
    expect(findClear(emptyPage(), null, 0, PAGE_BITS)).toBe(0);
  });

  test("skips set bits", () => {
    expect(findClear(pageWith(0, 40), null, 0, PAGE_BITS)).toBe(41);
  });

  test("skips bits set in the mask as well as in the words", () => {
    const words = pageWith(0, 9);
    const mask = pageWith(10, 69);
    expect(findClear(words, mask, 0, PAGE_BITS)).toBe(70);
  });

  test("a bit set only in the mask is not free", () => {
    const mask = emptyPage();
    setBit(mask, 0);
    setBit(mask, 1);
    expect(findClear(emptyPage(), mask, 0, PAGE_BITS)).toBe(2);
  });

  test("does not modify the words or the mask", () => {
    const words = pageWith(0, 3);
    const mask = pageWith(4, 5);
    findClear(words, mask, 2, 100);
    expect(setBits(words)).toEqual([0, 1, 2, 3]);
    expect(setBits(mask)).toEqual([4, 5]);
  });

  test.each([
    [0, 0],
    [5, 5],
    [31, 31],
    [32, 32],
    [45, 45],
    [4095, 4095],
  ])("on an empty page, starting from %i finds %i", (from, expected) => {
    expect(findClear(emptyPage(), null, from, PAGE_BITS)).toBe(expected);
  });

  test("starting in the middle of a word ignores clear bits before `from` in that word", () => {
    const page = emptyPage();
    setBitRange(page, 40, 50);
    // bits 32..39 are clear but before `from`
    expect(findClear(page, null, 40, PAGE_BITS)).toBe(51);
    expect(findClear(page, null, 45, PAGE_BITS)).toBe(51);
  });

  test("starting in the middle of a word finds a clear bit later in the same word", () => {
    const page = pageWith(0, 63);
    clearBit(page, 10);
    clearBit(page, 20);
    expect(findClear(page, null, 11, PAGE_BITS)).toBe(20);
    expect(findClear(page, null, 10, PAGE_BITS)).toBe(10);
    expect(findClear(page, null, 21, PAGE_BITS)).toBe(64);
  });

  test("finds bit 31 (the sign bit of a word)", () => {
    const page = pageWith(0, 30);
    expect(findClear(page, null, 0, PAGE_BITS)).toBe(31);
    expect(findClear(page, null, 31, 32)).toBe(31);
  });

  test("`end` not a multiple of 32 stops inside the last word", () => {
    const page = pageWith(0, 99);
    // 100 bits set; end 100 means nothing is free, even though bits 100..127 are clear
    expect(findClear(page, null, 0, 100)).toBe(-1);
    expect(findClear(page, null, 0, 101)).toBe(100);
  });

  test("a partial last word with a free bit before `end` finds it", () => {
    const page = pageWith(0, 255);
    clearBit(page, 250);
    expect(findClear(page, null, 0, 253)).toBe(250);
    expect(findClear(page, null, 251, 253)).toBe(-1);
  });

  test.each([1, 31, 32, 33, 200])("a range of %i bits with every bit set has nothing free", (n) => {
    const page = pageWith(0, n - 1);
    expect(findClear(page, null, 0, n)).toBe(-1);
  });

  test("from >= end finds nothing", () => {
    expect(findClear(emptyPage(), null, 10, 10)).toBe(-1);
    expect(findClear(emptyPage(), null, 11, 10)).toBe(-1);
  });

  test("finds the last bit of a page (4095) when it is the only clear one", () => {
    const page = pageWith(0, 4094);
    expect(findClear(page, null, 0, PAGE_BITS)).toBe(4095);
    expect(findClear(page, null, 4095, PAGE_BITS)).toBe(4095);
  });

  test("finds bit 4095 when only the mask covers the rest", () => {
    const words = pageWith(0, 2000);
    const mask = pageWith(2001, 4094);
    expect(findClear(words, mask, 0, PAGE_BITS)).toBe(4095);
  });

  test("a full page returns -1", () => {
    expect(findClear(pageWith(0, 4095), null, 0, PAGE_BITS)).toBe(-1);
  });

  test("a page full between words and mask returns -1", () => {
    expect(findClear(pageWith(0, 3000), pageWith(2000, 4095), 0, PAGE_BITS)).toBe(-1);
  });

  test("a page whose only free bit is before `from` returns -1", () => {
    const page = pageWith(0, 4095);
    clearBit(page, 100);
    expect(findClear(page, null, 101, PAGE_BITS)).toBe(-1);
    expect(findClear(page, null, 0, PAGE_BITS)).toBe(100);
  });
});

describe("findSet", () => {
  test("an empty page has no set bit", () => {
    expect(findSet(emptyPage(), 0, PAGE_BITS)).toBe(-1);
  });

  test.each([0, 31, 32, 1000, 4095])("finds the single set bit %i", (bit) => {
    const page = emptyPage();
    setBit(page, bit);
    expect(findSet(page, 0, PAGE_BITS)).toBe(bit);
    expect(findSet(page, bit, PAGE_BITS)).toBe(bit);
    expect(findSet(page, bit + 1, PAGE_BITS)).toBe(-1);
  });

  test("ignores set bits before `from` in the same word", () => {
    const page = emptyPage();
    setBit(page, 3);
    setBit(page, 9);
    expect(findSet(page, 4, PAGE_BITS)).toBe(9);
  });

  test("ignores set bits at or after `end` in the last word", () => {
    const page = emptyPage();
    setBit(page, 40);
    expect(findSet(page, 0, 40)).toBe(-1);
    expect(findSet(page, 0, 41)).toBe(40);
  });

  test("iterating with findSet visits every set bit in order", () => {
    const page = emptyPage();
    const expected = [0, 5, 31, 32, 64, 100, 2048, 4095];
    for (const bit of expected) setBit(page, bit);
    const seen: number[] = [];
    for (let bit = findSet(page, 0, PAGE_BITS); bit >= 0; bit = findSet(page, bit + 1, PAGE_BITS)) seen.push(bit);
    expect(seen).toEqual(expected);
  });

  test("from >= end finds nothing", () => {
    const page = pageWith(0, 10);
    expect(findSet(page, 5, 5)).toBe(-1);
  });
});

describe("findSetCircular", () => {
  const summary = (bits: number[], words = 1): Uint32Array => {
    const s = new Uint32Array(words);
    for (const bit of bits) setBit(s, bit);
    return s;
  };

  test("finds the first set bit at or after `from`", () => {
    expect(findSetCircular(summary([1, 5, 9]), 3, 10)).toBe(5);
    expect(findSetCircular(summary([1, 5, 9]), 5, 10)).toBe(5);
  });

  test("wraps around to the start when nothing is set after `from`", () => {
    expect(findSetCircular(summary([1, 5]), 6, 10)).toBe(1);
  });

  test("wrapping reaches the bit just before `from`", () => {
    expect(findSetCircular(summary([2]), 3, 10)).toBe(2);
  });

  test("with `from` equal to `end` it scans from the start", () => {
    expect(findSetCircular(summary([0]), 2, 2)).toBe(0);
  });

  test("returns -1 when nothing is set", () => {
    expect(findSetCircular(summary([]), 4, 10)).toBe(-1);
  });

  test("ignores bits at or after `end`, before and after wrapping", () => {
    expect(findSetCircular(summary([12]), 3, 10)).toBe(-1);
    expect(findSetCircular(summary([12]), 11, 10)).toBe(-1);
  });

  test("works across words in a multi-word summary", () => {
    const s = summary([3, 70], 4);
    expect(findSetCircular(s, 4, 128)).toBe(70);
    expect(findSetCircular(s, 71, 128)).toBe(3);
  });
});

describe("popcount", () => {
  test.each([
    [0, 0],
    [1, 1],
    [0b1011, 3],
    [0x80000000, 1],
    [0xffffffff, 32],
    [-1, 32],
    [0x55555555, 16],
    [0xaaaaaaaa, 16],
    [0x0f0f0f0f, 16],
    [0x12345678, 13],
  ])("popcount(%i) is %i", (word, expected) => {
    expect(popcount(word)).toBe(expected);
  });

  test("agrees with counting set bits of a page", () => {
    const page = emptyPage();
    setBitRange(page, 17, 300);
    setBit(page, 4095);
    let total = 0;
    for (const word of page) total += popcount(word);
    expect(total).toBe(300 - 17 + 1 + 1);
  });
});

describe("setBitRange", () => {
  test("sets an inclusive range within a word", () => {
    const page = emptyPage();
    setBitRange(page, 3, 6);
    expect(setBits(page)).toEqual([3, 4, 5, 6]);
  });

  test("sets a single bit when first equals last", () => {
    const page = emptyPage();
    setBitRange(page, 31, 31);
    expect(setBits(page)).toEqual([31]);
  });

  test("sets a range across word boundaries", () => {
    const page = emptyPage();
    setBitRange(page, 30, 65);
    expect(setBits(page)).toEqual(Array.from({ length: 36 }, (_, i) => 30 + i));
    expect(page[1]).toBe(0xffffffff);
  });

  test("sets the whole page", () => {
    const page = emptyPage();
    setBitRange(page, 0, PAGE_BITS - 1);
    expect(page.every((word) => word === 0xffffffff)).toBe(true);
  });

  test("leaves already-set bits outside the range alone", () => {
    const page = emptyPage();
    setBit(page, 0);
    setBitRange(page, 10, 11);
    expect(setBits(page)).toEqual([0, 10, 11]);
  });
});

describe("pageToBytes / pageFromBytes", () => {
  const sample = (): Uint32Array => {
    const page = emptyPage();
    for (const bit of [0, 1, 31, 32, 777, 2048, 4095]) setBit(page, bit);
    page[50] = 0xdeadbeef;
    return page;
  };

  test("a page round-trips through bytes", () => {
    const page = sample();
    const bytes = pageToBytes(page);
    expect(bytes).toHaveLength(PAGE_BYTES);
    expect(pageFromBytes(bytes)).toEqual(page);
  });

  test("pageToBytes is a view of the same memory", () => {
    const page = emptyPage();
    const bytes = pageToBytes(page);
    setBit(page, 0);
    expect(bytes[0]).not.toBe(0);
  });

  test("pageToBytes of a subarray covers only that subarray", () => {
    const page = sample();
    const bytes = pageToBytes(page.subarray(50, 52));
    expect(bytes).toHaveLength(8);
    expect(pageFromBytes(bytes, 2)).toEqual(page.subarray(50, 52));
  });

  test("pageFromBytes returns a copy, not a view of the stored bytes", () => {
    const bytes = new Uint8Array(pageToBytes(sample()));
    const page = pageFromBytes(bytes);
    bytes.fill(0);
    expect(testBit(page, 4095)).toBe(true);
  });

  test("round-trips through a Buffer copy, as the store writes it", () => {
    const page = sample();
    const stored = Buffer.from(pageToBytes(page));
    expect(pageFromBytes(stored)).toEqual(page);
  });

  test("reads bytes from an unaligned Buffer", () => {
    const page = sample();
    const padded = Buffer.alloc(PAGE_BYTES + 1);
    padded.set(pageToBytes(page), 1);
    const unaligned = padded.subarray(1);
    expect(unaligned.byteOffset % 4).not.toBe(0);
    const read = pageFromBytes(unaligned);
    expect(read).toEqual(page);
    expect(read.byteOffset).toBe(0);
  });

  test("reads from an unaligned Buffer.from(...).subarray(1)", () => {
    const page = sample();
    const unaligned = Buffer.from([0xff, ...pageToBytes(page)]).subarray(1);
    expect(pageFromBytes(unaligned)).toEqual(page);
  });

  test("reads a summary of a given word count", () => {
    const summary = new Uint32Array(3);
    setBit(summary, 0);
    setBit(summary, 95);
    const read = pageFromBytes(Buffer.from(pageToBytes(summary)).subarray(0), 3);
    expect(read).toHaveLength(3);
    expect(read).toEqual(summary);
  });

  test("fewer bytes than words leaves the remaining words zero", () => {
    const bytes = new Uint8Array([1, 0, 0, 0]);
    const read = pageFromBytes(bytes);
    expect(read).toHaveLength(PAGE_WORDS);
    expect(setBits(read)).toEqual([0]);
  });
});
