/**
 * What a daemon keeps of the pools' layout between transactions: each pool's stamp, its counts, its
 * list of full pages, and the pages it read or wrote (with the version they were read at, where
 * they were read). It serves as guesses for a transaction's prefetch (store.ts), and as what a
 * one-statement commit is planned over (optimistic.ts), which the statement checks.
 *
 * The list of full pages is kept in step with the flags of the pages kept: a plan then reads a
 * pool's summary from the list alone, at the same cost whether the daemon holds two pages or two
 * thousand (its full ones included).
 */
import { Answers, pageKey, pageOfKey, type StoredPage } from "./reads.ts";

/** The answers that describe a pool's layout. */
const LAYOUT_KEYS = /^(pools$|counts\0|fullPages\0|page\0)/;

export class LayoutCache extends Answers {
  /** Keeps what a transaction's answers know of the pools' layout, over what was kept before. */
  keep(answers: Answers): void {
    for (const [key, value] of answers) if (LAYOUT_KEYS.test(key)) this.set(key, value);
  }

  override set(key: string, value: unknown): this {
    if (key.startsWith("fullPages\0")) {
      // A copy: the flags of the pages kept are applied to it, and a transaction may still hold the one given.
      const pool = key.slice("fullPages\0".length);
      const full = new Set(value as Set<number>);
      for (const index of this.pagesOf(pool)) {
        const page = this.get(pageKey(pool, index)) as StoredPage | undefined;
        if (page) flag(full, index, page.full);
      }
      return super.set(key, full);
    }
    super.set(key, value);
    const page = value as StoredPage | undefined;
    const named = pageOfKey(key);
    if (page && named) {
      const full = this.get(`fullPages\0${named.pool}`) as Set<number> | undefined;
      if (full) flag(full, named.index, page.full);
    }
    return this;
  }
}

function flag(full: Set<number>, index: number, isFull: boolean): void {
  if (isFull) full.add(index);
  else full.delete(index);
}
