/** `GET /metrics`: the Prometheus text exposition of the daemon's registry. */
import { Elysia } from "elysia";

/** What the route needs from a metrics registry (prom-client's `Registry` fits). */
export interface Exposition {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export function metricsRoutes(exposition: Exposition) {
  return new Elysia().get(
    "/metrics",
    async () => new Response(await exposition.metrics(), { headers: { "content-type": exposition.contentType } }),
  );
}
