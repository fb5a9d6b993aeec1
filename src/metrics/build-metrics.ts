/** `ippool_build_info`: a constant 1 whose labels say what is running. */
import { Gauge, type Registry } from "prom-client";

export interface BuildInfo {
  readonly version: string;
  /** "bun" or "deno". */
  readonly runtime: string;
}

export function buildInfoMetrics(registry: Registry, info: BuildInfo): void {
  const gauge = new Gauge({
    name: "ippool_build_info",
    help: "Always 1; the labels give the ippool version and the JavaScript runtime it runs on.",
    labelNames: ["version", "runtime"] as const,
    registers: [registry],
  });
  gauge.set({ version: info.version, runtime: info.runtime }, 1);
}
