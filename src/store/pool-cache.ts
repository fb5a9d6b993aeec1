/**
 * Each pool's bitmap pages and summary as the daemon last wrote or read them, so an allocation
 * neither reads nor copies them out of LMDB. The daemon is its store's only writer (the data
 * directory's lock), and every write goes through the store, which writes through this cache.
 *
 * What the cache cannot see is a commit that failed after its transaction had changed pages here
 * (a full disk): LMDB drops those changes, the cache still holds them. So every change to a pool
 * also bumps a write generation kept with the pool's counters on disk, and reading the counters
 * (which every allocation and release does first, inside its transaction) compares the committed
 * generation with the cached one: when they differ, the pool's pages are read again. This holds
 * however lmdb-js orders a failed commit's notice and the next transaction.
 */
export class PoolCache {
  private readonly pools = new Map<string, CachedPool>();

  /** The pool's cached state, emptied first if the committed generation is not the cached one. */
  checked(pool: string, committedGeneration: number): CachedPool {
    const cached = this.pools.get(pool);
    if (cached?.generation === committedGeneration) return cached;
    const fresh = new CachedPool(committedGeneration);
    this.pools.set(pool, fresh);
    return fresh;
  }

  /** The pool's cached state, as it is (for writes and for reads outside a checked transaction). */
  of(pool: string): CachedPool {
    let cached = this.pools.get(pool);
    if (cached === undefined) {
      cached = new CachedPool(0);
      this.pools.set(pool, cached);
    }
    return cached;
  }

  forget(pool: string): void {
    this.pools.delete(pool);
  }

  /** After a failed commit: nothing cached is trusted any more. */
  clear(): void {
    this.pools.clear();
  }
}

export class CachedPool {
  readonly pages = new Map<number, Uint32Array>();
  summary: Uint32Array | undefined;

  constructor(
    /** The write generation these pages belong to: the pool's counters carry the committed one. */
    public generation: number,
  ) {}

  /** The generation the next change to the pool is written with (it wraps: only equality counts). */
  nextGeneration(): number {
    this.generation = (this.generation + 1) >>> 0;
    return this.generation;
  }
}
