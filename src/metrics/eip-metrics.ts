/**
 * Elastic IPs by pool, project and state, counted in the store at each scrape. The counts come
 * from the store's state index (one native key count per pool, project and state), not from
 * reading the records: decoding thousands of records would take tens of milliseconds.
 */
import { Gauge, type Registry } from "prom-client";
import { EIP_STATES, type EipState } from "../eip/store.ts";

export interface EipMetricsSource {
  /** Configured public pools and projects: every combination is reported, at zero when empty. */
  readonly pools: readonly string[];
  /** The projects configured now (a reload may change them); called at each scrape. */
  projects(): readonly string[];
  count(pool: string, project: string, state: EipState): number;
}

export function eipMetrics(registry: Registry, source: EipMetricsSource): void {
  new Gauge({
    name: "ippool_eips",
    help: "Elastic IPs by pool, project and state (allocated: held, not associated; associated).",
    labelNames: ["pool", "project", "state"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of source.pools) {
        for (const project of source.projects()) {
          for (const state of EIP_STATES) this.set({ pool, project, state }, source.count(pool, project, state));
        }
      }
    },
  });
}
