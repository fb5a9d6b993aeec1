/**
 * Fixed-size bitmap pages, pure functions over Uint32Array. Bit `i` of a page lives in word
 * `i >>> 5` at position `i & 31`; a set bit means "taken". A page's reserved mask (network,
 * broadcast, gateway, reserved ranges, bits past the end of the pool) is kept apart from the
 * stored allocation bits so that changing reservations never rewrites allocation state.
 */

export const PAGE_BITS = 4096;
export const PAGE_WORDS = PAGE_BITS / 32;
export const PAGE_BYTES = PAGE_BITS / 8;

export type Page = Uint32Array;

export function emptyPage(): Page {
  return zeroedWords(PAGE_WORDS);
}

/**
 * A zeroed word array over an explicit ArrayBuffer. JavaScriptCore makes reading `.buffer` of
 * a typed array created by length slow (it moves the storage); pages are turned into bytes on
 * every write, so they are always created this way.
 */
export function zeroedWords(count: number): Uint32Array {
  return new Uint32Array(new ArrayBuffer(count * 4));
}

export function testBit(words: Uint32Array, bit: number): boolean {
  return ((words[bit >>> 5] as number) & (1 << (bit & 31))) !== 0;
}

export function setBit(words: Uint32Array, bit: number): void {
  words[bit >>> 5] = (words[bit >>> 5] as number) | (1 << (bit & 31));
}

export function clearBit(words: Uint32Array, bit: number): void {
  words[bit >>> 5] = (words[bit >>> 5] as number) & ~(1 << (bit & 31));
}

/** Index of the lowest set bit of a non-zero 32-bit word. */
function lowestSetBit(word: number): number {
  return 31 - Math.clz32(word & -word);
}

/**
 * First bit at or after `from` (and before `end`) that is clear in `words` and, when given, in
 * `mask`. Returns -1 when there is none. Cost is bounded by the words scanned, never by content.
 */
export function findClear(words: Uint32Array, mask: Uint32Array | null, from: number, end: number): number {
  if (from >= end) return -1;
  const lastWord = (end - 1) >>> 5;
  for (let w = from >>> 5; w <= lastWord; w++) {
    let taken = (words[w] as number) | (mask ? (mask[w] as number) : 0);
    if (w === from >>> 5) taken |= (1 << (from & 31)) - 1;
    if (w === lastWord && (end & 31) !== 0) taken |= ~((1 << (end & 31)) - 1);
    const free = ~taken;
    if (free !== 0) return (w << 5) + lowestSetBit(free);
  }
  return -1;
}

/** First set bit at or after `from` and before `end`, or -1. */
export function findSet(words: Uint32Array, from: number, end: number): number {
  if (from >= end) return -1;
  const lastWord = (end - 1) >>> 5;
  for (let w = from >>> 5; w <= lastWord; w++) {
    let bits = words[w] as number;
    if (w === from >>> 5) bits &= ~((1 << (from & 31)) - 1);
    if (w === lastWord && (end & 31) !== 0) bits &= (1 << (end & 31)) - 1;
    if (bits !== 0) return (w << 5) + lowestSetBit(bits);
  }
  return -1;
}

/**
 * First set bit scanning circularly from `from`: [from, end) then [0, from). Used on the pool
 * summary (one bit per page that still has a free address) to implement next-fit.
 */
export function findSetCircular(words: Uint32Array, from: number, end: number): number {
  const ahead = findSet(words, from, end);
  return ahead >= 0 ? ahead : findSet(words, 0, Math.min(from, end));
}

/** Number of set bits in a 32-bit word. */
export function popcount(word: number): number {
  let v = word - ((word >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Sets bits `[first, last]` (inclusive) of `words`. */
export function setBitRange(words: Uint32Array, first: number, last: number): void {
  for (let bit = first; bit <= last; bit++) setBit(words, bit);
}

/**
 * The words' bytes for storage, as a view (no copy; the store copies on write). Pages are
 * stored in the machine's byte order: a data directory is not portable across endianness.
 */
export function pageToBytes(words: Uint32Array): Buffer {
  return Buffer.from(words.buffer, words.byteOffset, words.byteLength);
}

/** Copies stored bytes into a fresh, aligned word array of `wordCount` words. */
export function pageFromBytes(bytes: Uint8Array, wordCount: number = PAGE_WORDS): Uint32Array {
  const buffer = new ArrayBuffer(wordCount * 4);
  new Uint8Array(buffer).set(bytes.subarray(0, wordCount * 4));
  return new Uint32Array(buffer);
}
