/**
 * Hypervisor hosts: whether each SSH connection is up (read at scrape time), and per command
 * (the program only: nft, ip, virsh, conntrack, arping) its latency and its failures.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { HostCommandEvents } from "../hosts/events.ts";
import { HOST_SECONDS_BUCKETS } from "./association-metrics.ts";

export interface HostMetricsSource {
  /** Every configured host and whether its SSH connection is up; called at each scrape. */
  hosts(): Iterable<{ readonly name: string; readonly connected: boolean }>;
}

export function hostMetrics(registry: Registry, source: HostMetricsSource): HostCommandEvents {
  new Gauge({
    name: "ippool_host_up",
    help: "1 while the SSH connection to the host is up, 0 otherwise.",
    labelNames: ["host"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const { name, connected } of source.hosts()) this.set({ host: name }, connected ? 1 : 0);
    },
  });
  const duration = new Histogram({
    name: "ippool_host_command_duration_seconds",
    help: "Time a command took on a host over SSH (queueing for a channel included), whatever its exit status.",
    labelNames: ["host", "command"] as const,
    buckets: HOST_SECONDS_BUCKETS,
    registers: [registry],
  });
  const failures = new Counter({
    name: "ippool_host_command_failures_total",
    help: "Host commands that did not succeed, by reason: exit_status (non-zero; some are expected), timeout, unavailable (host not reachable), error (channel not opened).",
    labelNames: ["host", "command", "reason"] as const,
    registers: [registry],
  });
  return {
    command(host, command, seconds, failure) {
      if (seconds !== null) duration.observe({ host, command }, seconds);
      if (failure !== null) failures.inc({ host, command, reason: failure });
    },
  };
}
