/**
 * Mutual exclusion by name: changes to one EIP (`eip:<id>`), one instance (`instance:<vm_id>`) or
 * one host's rules (`host:<name>`) are serialised, and held across the SSH round trips of the
 * change, outside any store transaction. EIP and instance locks are taken first, host locks last.
 */
export interface EipLocks {
  /** Runs `body` holding every lock in `keys`. */
  run<T>(keys: readonly string[], body: () => Promise<T>): Promise<T>;
}

/**
 * In-process locks: enough where one daemon is the only writer (the embedded store); in fleet mode
 * the first stage of the fleet's locks (store/postgres/locks.ts).
 */
export class KeyedLocks implements EipLocks {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `body` holding every lock in `keys` (taken in sorted order, so callers cannot deadlock). */
  async run<T>(keys: readonly string[], body: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const key of sorted) releases.push(await this.acquire(key));
      return await body();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  private async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
