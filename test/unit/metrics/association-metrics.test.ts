/**
 * Association and reconciliation metrics: the factories on their own, then the EIP services
 * reporting to them over a real store, with hosts replaced by a stub.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import type { ProjectDefinition } from "../../../src/config/config.ts";
import { EipAssociations } from "../../../src/eip/association.ts";
import type { ConvergeCounts, HostGateway } from "../../../src/eip/hosts.ts";
import { KeyedLocks } from "../../../src/eip/locks.ts";
import { EipReconciler } from "../../../src/eip/reconcile.ts";
import type { EipService } from "../../../src/eip/service.ts";
import { AppError } from "../../../src/errors.ts";
import { Logger } from "../../../src/log/logger.ts";
import { associationMetrics } from "../../../src/metrics/association-metrics.ts";
import { reconciliationMetrics } from "../../../src/metrics/reconciliation-metrics.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";
import type { LmdbStore } from "../../../src/store/lmdb.ts";
import { parseExposition, samplesOf, sampleValue } from "../../support/prometheus.ts";
import { type StoreFixture, storeFixture } from "../../support/store-fixture.ts";

async function scrape(registry: Registry) {
  return parseExposition(await registry.metrics());
}

describe("associationMetrics", () => {
  test("both operations' histograms exist from the start; durations and failures are recorded", async () => {
    const registry = new Registry();
    const events = associationMetrics(registry);
    let samples = await scrape(registry);
    const name = "ippool_eip_association_duration_seconds";
    expect(sampleValue(samples, `${name}_count`, { operation: "associate" })).toBe(0);
    expect(sampleValue(samples, `${name}_count`, { operation: "disassociate" })).toBe(0);
    events.succeeded("associate", 0.04);
    events.succeeded("associate", 3);
    events.failed("associate", "HOST_UNAVAILABLE");
    events.failed("disassociate", "NOT_ASSOCIATED");
    samples = await scrape(registry);
    expect(sampleValue(samples, `${name}_count`, { operation: "associate" })).toBe(2);
    expect(sampleValue(samples, `${name}_sum`, { operation: "associate" })).toBeCloseTo(3.04);
    expect(sampleValue(samples, `${name}_bucket`, { operation: "associate", le: "0.05" })).toBe(1);
    expect(sampleValue(samples, `${name}_bucket`, { operation: "associate", le: "+Inf" })).toBe(2);
    const failures = (operation: string, code: string) =>
      sampleValue(samples, "ippool_eip_association_failures_total", { operation, code });
    expect(failures("associate", "HOST_UNAVAILABLE")).toBe(1);
    expect(failures("disassociate", "NOT_ASSOCIATED")).toBe(1);
  });
});

describe("reconciliationMetrics", () => {
  test("configured hosts start at zero; runs, failures and each kind of correction are counted", async () => {
    const registry = new Registry();
    const events = reconciliationMetrics(registry, ["hv1", "hv2"]);
    let samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_reconciliation_failures_total", { host: "hv2" })).toBe(0);
    expect(samplesOf(samples, "ippool_reconciliation_corrections_total", { host: "hv1" })).toHaveLength(3);
    expect(sampleValue(samples, "ippool_reconciliation_duration_seconds_count", { host: "hv1" })).toBe(0);
    events.succeeded("hv1", 0.2, { added: 2, removed: 1, changed: 0 });
    events.succeeded("hv1", 0.1, { added: 0, removed: 0, changed: 0 });
    events.failed("hv2");
    samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_reconciliation_duration_seconds_count", { host: "hv1" })).toBe(2);
    expect(sampleValue(samples, "ippool_reconciliation_corrections_total", { host: "hv1", kind: "added" })).toBe(2);
    expect(sampleValue(samples, "ippool_reconciliation_corrections_total", { host: "hv1", kind: "removed" })).toBe(1);
    expect(sampleValue(samples, "ippool_reconciliation_corrections_total", { host: "hv1", kind: "changed" })).toBe(0);
    expect(sampleValue(samples, "ippool_reconciliation_failures_total", { host: "hv2" })).toBe(1);
  });
});

class Unreachable extends AppError {
  readonly status = 502;
  readonly code = "HOST_UNAVAILABLE";
}

/** One host, "hv1", running "web-1"; `down` makes every call fail as unreachable. */
class StubHosts implements HostGateway {
  down = false;
  drift: ConvergeCounts = { added: 0, removed: 0, changed: 0 };
  private reach() {
    if (this.down) throw new Unreachable("hv1 is down");
  }
  has = (host: string) => host === "hv1";
  hostNames = () => ["hv1"];
  instanceState = async (_host: string, instance: string) => {
    this.reach();
    return instance === "web-1" ? "running" : null;
  };
  locate = async (instance: string) => {
    this.reach();
    return instance === "web-1" ? { host: "hv1", state: "running" } : null;
  };
  instanceUuid = async () => {
    this.reach();
    return null;
  };
  instanceAddresses = async () => [parseIpv4("192.168.100.11")];
  apply = async () => this.reach();
  remove = async () => this.reach();
  converge = async () => {
    this.reach();
    return { ...this.drift, removedEips: [] };
  };
  announce() {}
  onConnect() {}
}

describe("the EIP services report to them", () => {
  const acme: ProjectDefinition = { name: "acme", apiKeySha256: "0".repeat(64), quota: 10 };
  let fixture: StoreFixture;
  let store: LmdbStore;
  let registry: Registry;
  let hosts: StubHosts;
  let eips: EipService;
  let associations: EipAssociations;
  let reconciler: EipReconciler;

  beforeEach(async () => {
    fixture = await storeFixture();
    ({ store } = fixture);
    registry = new Registry();
    hosts = new StubHosts();
    const logger = new Logger("text", "error", () => {});
    const locks = new KeyedLocks();
    eips = fixture.eips;
    associations = new EipAssociations(store, hosts, fixture.pools, locks, logger, associationMetrics(registry));
    reconciler = new EipReconciler(store, hosts, locks, logger, reconciliationMetrics(registry, ["hv1"]));
  });

  afterEach(async () => {
    await fixture.dispose();
  });

  test("associate and disassociate: durations of those that succeed, failures by code", async () => {
    const { eip } = await eips.allocate(acme, {});
    await associations.associate(acme, eip.id, { instanceId: "web-1" });
    await associations.disassociate(acme, eip.id);
    await expect(associations.disassociate(acme, eip.id)).rejects.toThrow("not associated");
    await expect(associations.associate(acme, eip.id, { instanceId: "nosuch" })).rejects.toThrow();
    hosts.down = true;
    await expect(associations.associate(acme, eip.id, { instanceId: "web-1" })).rejects.toThrow("down");

    const samples = await scrape(registry);
    const count = (operation: string) =>
      sampleValue(samples, "ippool_eip_association_duration_seconds_count", { operation });
    expect(count("associate")).toBe(1);
    expect(count("disassociate")).toBe(1);
    const failures = (operation: string, code: string) =>
      sampleValue(samples, "ippool_eip_association_failures_total", { operation, code });
    expect(failures("disassociate", "NOT_ASSOCIATED")).toBe(1);
    expect(failures("associate", "INSTANCE_NOT_FOUND")).toBe(1);
    expect(failures("associate", "HOST_UNAVAILABLE")).toBe(1);
  });

  test("reconciliation: a run's duration and drift, and a failed run", async () => {
    hosts.drift = { added: 1, removed: 2, changed: 1 };
    await reconciler.reconcileHost("hv1");
    hosts.down = true;
    await reconciler.reconcileHost("hv1");

    const samples = await scrape(registry);
    expect(sampleValue(samples, "ippool_reconciliation_duration_seconds_count", { host: "hv1" })).toBe(1);
    expect(sampleValue(samples, "ippool_reconciliation_failures_total", { host: "hv1" })).toBe(1);
    for (const [kind, n] of [
      ["added", 1],
      ["removed", 2],
      ["changed", 1],
    ] as const) {
      expect(sampleValue(samples, "ippool_reconciliation_corrections_total", { host: "hv1", kind })).toBe(n);
    }
  });
});
