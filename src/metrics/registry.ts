/**
 * The daemon's own Prometheus registry. prom-client's default Node.js metrics are left out: they
 * are slow to collect under Bun and some fail `promtool check metrics` (gauges named `_total`).
 */
import { Registry } from "prom-client";

export function createRegistry(): Registry {
  return new Registry();
}
