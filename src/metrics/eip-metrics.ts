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
  count(pool: string, project: string, state: EipState): Promise<number>;
}

export function eipMetrics(registry: Registry, source: EipMetricsSource): void {
  new Gauge({
    name: "ippool_eips",
    help: "Elastic IPs by pool, project and state (allocated: held, not associated; associated).",
    labelNames: ["pool", "project", "state"] as const,
    registers: [registry],
    async collect() {
      const labels = source.pools.flatMap((pool) =>
        source.projects().flatMap((project) => EIP_STATES.map((state) => ({ pool, project, state }))),
      );
      const counts = await Promise.all(labels.map(({ pool, project, state }) => source.count(pool, project, state)));
      this.reset();
      for (const [i, label] of labels.entries()) this.set(label, counts[i] as number);
    },
  });
}
