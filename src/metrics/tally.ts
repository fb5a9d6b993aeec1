/**
 * Events counted in plain numbers and handed to a prom-client Counter when it is scraped (from its
 * `collect`): `Counter.inc` checks and hashes the labels on every call, a cost each allocation
 * paid; here an event is a map lookup by one string and an addition.
 */
import type { Counter } from "prom-client";

export class Tally<L extends string> {
  private readonly pending = new Map<string, { readonly labels: Partial<Record<L, string>>; count: number }>();

  /** One event of the series `key`, whose labels `labels()` makes the first time. */
  add(key: string, labels: () => Partial<Record<L, string>>): void {
    const entry = this.pending.get(key);
    if (entry) entry.count++;
    else this.pending.set(key, { labels: labels(), count: 1 });
  }

  /** Adds the events counted since the last call to `counter`. */
  flushInto(counter: Counter<L>): void {
    for (const entry of this.pending.values()) {
      if (entry.count === 0) continue;
      counter.inc(entry.labels, entry.count);
      entry.count = 0;
    }
  }
}
