/**
 * The daemon's metrics: every group on one registry of ippool's own. Gauges read their sources
 * at scrape time (the sources may refer to services built after this, as long as nothing is
 * scraped before they exist); the event recorders returned here are handed to the services.
 */
import type { Registry } from "prom-client";
import type { AssociationEvents, ReconciliationEvents } from "../eip/events.ts";
import type { HostCommandEvents } from "../hosts/events.ts";
import type { LeakEvents, PoolEvents } from "../pool/events.ts";
import { associationMetrics } from "./association-metrics.ts";
import { type BuildInfo, buildInfoMetrics } from "./build-metrics.ts";
import { type EipMetricsSource, eipMetrics } from "./eip-metrics.ts";
import { type FleetMetricsSource, fleetMetrics } from "./fleet-metrics.ts";
import { type HostMetricsSource, hostMetrics } from "./host-metrics.ts";
import { type HttpRequestRecorder, httpMetrics } from "./http-metrics.ts";
import { leakMetrics } from "./leak-metrics.ts";
import { type PoolMetricsSource, poolMetrics } from "./pool-metrics.ts";
import { reconciliationMetrics } from "./reconciliation-metrics.ts";
import { createRegistry } from "./registry.ts";
import { type StoreMetricsSource, storeMetrics } from "./store-metrics.ts";

export interface DaemonMetricsSources {
  readonly build: BuildInfo;
  readonly pools: PoolMetricsSource;
  readonly eips: EipMetricsSource;
  /** Configured host names (their reconciliation series start at zero). */
  readonly hostNames: readonly string[];
  readonly hosts: HostMetricsSource;
  /** The embedded store's own figures (absent with the shared store). */
  readonly store?: StoreMetricsSource;
  /** This daemon's pages in a fleet (the shared store only). */
  readonly fleet?: FleetMetricsSource;
}

export interface DaemonMetrics {
  /** Served at `GET /metrics`. */
  readonly registry: Registry;
  readonly pools: PoolEvents;
  readonly leaks: LeakEvents;
  readonly associations: AssociationEvents;
  readonly reconciliation: ReconciliationEvents;
  readonly hostCommands: HostCommandEvents;
  readonly requests: HttpRequestRecorder;
}

export function createDaemonMetrics(sources: DaemonMetricsSources): DaemonMetrics {
  const registry = createRegistry();
  buildInfoMetrics(registry, sources.build);
  const pools = poolMetrics(registry, sources.pools);
  const leaks = leakMetrics(
    registry,
    sources.pools.pools.filter((p) => p.kind === "vm").map((p) => p.pool),
  );
  eipMetrics(registry, sources.eips);
  const associations = associationMetrics(registry);
  const reconciliation = reconciliationMetrics(registry, sources.hostNames);
  const hostCommands = hostMetrics(registry, sources.hosts);
  const requests = httpMetrics(registry);
  if (sources.store !== undefined) storeMetrics(registry, sources.store);
  if (sources.fleet !== undefined) fleetMetrics(registry, sources.fleet);
  return { registry, pools, leaks, associations, reconciliation, hostCommands, requests };
}

export type { BuildInfo } from "./build-metrics.ts";
export type { EipMetricsSource } from "./eip-metrics.ts";
export type { HostMetricsSource } from "./host-metrics.ts";
export type { HttpRequestRecorder } from "./http-metrics.ts";
export type { PoolMetricsSource } from "./pool-metrics.ts";
export type { StoreMetricsSource, StoreSizes } from "./store-metrics.ts";
