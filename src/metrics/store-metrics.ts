/** The LMDB store's size: its map (the most the file may grow to) and the part in use, read at scrape time. */
import { Gauge, type Registry } from "prom-client";

export interface StoreSizes {
  /** The memory map's size: the current upper bound of the data file. */
  readonly mapSizeBytes: number;
  /** Pages in use up to the last one written, in bytes (free pages inside that range included). */
  readonly usedBytes: number;
}

export interface StoreMetricsSource {
  /** Cheap (a few microseconds): read once per gauge at each scrape. */
  sizes(): StoreSizes;
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
    name: "ippool_store_used_bytes",
    help: "Bytes of the LMDB data file in use (pages up to the last one written, free pages among them included).",
    registers: [registry],
    collect() {
      this.set(source.sizes().usedBytes);
    },
  });
}
