/**
 * HTTP requests by method, route template and status. The route is the template the request
 * matched (`/api/v1/ip/:vm_id`), "unmatched" when none did, so the label set stays bounded
 * whatever paths clients send; so does the method (anything unusual is "other").
 */
import type { Registry } from "prom-client";
import { SeriesHistogram } from "./series-histogram.ts";

/** Most answers take well under a millisecond; writes wait for an LMDB flush; EIP calls for SSH. */
const HTTP_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

export interface HttpRequestRecorder {
  request(method: string, route: string | undefined, status: number, seconds: number): void;
}

export function httpMetrics(registry: Registry): HttpRequestRecorder {
  const duration = new SeriesHistogram(
    "ippool_http_request_duration_seconds",
    "Time from receiving a request to its response being ready, by method, route template and status.",
    HTTP_SECONDS_BUCKETS,
    registry,
  );
  return {
    request(method, route, status, seconds) {
      const known = METHODS.has(method) ? method : "other";
      duration
        .seriesOf(`${known} ${status} ${route}`, () => ({
          method: known,
          route: route ?? "unmatched",
          status: String(status),
        }))
        .observe(seconds);
    },
  };
}
