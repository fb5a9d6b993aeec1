/**
 * The LMDB store: its size (the map, the most the file may grow to, and the part in use) and its
 * refused commits (a full file system above all), read at scrape time.
 */
import { Counter, Gauge, type Registry } from "prom-client";

export interface StoreSizes {
  /** The memory map's size: the current upper bound of the data file. */
  readonly mapSizeBytes: number;
  /** Pages in use up to the last one written, in bytes (free pages inside that range included). */
  readonly usedBytes: number;
}

export interface StoreWriteHealth {
  /** True from a commit refused for lack of space until one succeeds with room to spare again. */
  readonly full: boolean;
  /** Commits refused since the start: for lack of space, and for any other reason. */
  readonly failures: { readonly storageFull: number; readonly other: number };
}

export interface StoreMetricsSource {
  /** Cheap (a few microseconds): read once per gauge at each scrape. */
  sizes(): StoreSizes;
  writeHealth(): StoreWriteHealth;
}

export function storeMetrics(registry: Registry, source: StoreMetricsSource): void {
  new Gauge({
    name: "ippool_store_map_size_bytes",
    help: "Size of the LMDB memory map (the data file's current upper bound).",
    registers: [registry],
    collect() {
      this.set(source.sizes().mapSizeBytes);
    },
  });
  new Gauge({
    name: "ippool_store_full",
    help: "1 while changes are refused because the data directory's file system is full (507 STORAGE_FULL); 0 once a change is written again.",
    registers: [registry],
    collect() {
      this.set(source.writeHealth().full ? 1 : 0);
    },
  });
  new Counter({
    name: "ippool_store_write_failures_total",
    help: "Changes the store could not commit, by reason: storage_full (no space; answered 507) or error.",
    labelNames: ["reason"] as const,
    registers: [registry],
    collect() {
      const { storageFull, other } = source.writeHealth().failures;
      this.reset();
      this.inc({ reason: "storage_full" }, storageFull);
      this.inc({ reason: "error" }, other);
    },
  });
  new Gauge({
    name: "ippool_store_used_bytes",
    help: "Bytes of the LMDB data file in use (pages up to the last one written, free pages among them included).",
    registers: [registry],
    collect() {
      this.set(source.sizes().usedBytes);
    },
  });
}
