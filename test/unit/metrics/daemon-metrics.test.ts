/**
 * Every group together, as the daemon registers them: names and help pass the real
 * `promtool check metrics`, and nothing but ippool's own metrics is exported.
 */
import { expect, test } from "bun:test";
import { createDaemonMetrics } from "../../../src/metrics/index.ts";
import { VERSION } from "../../../src/version.ts";
import { exportedNames, parseExposition, promtool, sampleValue } from "../../support/prometheus.ts";

function metrics() {
  return createDaemonMetrics({
    build: { version: VERSION, runtime: "bun" },
    pools: {
      pools: [
        { pool: "vms", kind: "vm" },
        { pool: "public", kind: "eip" },
      ],
      usage: async () => [
        { pool: "vms", kind: "vm", usable: 253, allocated: 1, available: 252, reserved: 3 },
        { pool: "public", kind: "eip", usable: 254, allocated: 2, available: 252, reserved: 2 },
      ],
    },
    eips: { pools: ["public"], projects: () => ["acme"], count: async () => 1 },
    hostNames: ["hv1"],
    hosts: { hosts: () => [{ name: "hv1", connected: true }] },
    store: {
      sizes: () => ({ mapSizeBytes: 2 ** 30, usedBytes: 65536 }),
      writeHealth: () => ({ full: false, failures: { storageFull: 0, other: 0 } }),
    },
  });
}

test("build info carries the version and runtime", async () => {
  const samples = parseExposition(await metrics().registry.metrics());
  expect(sampleValue(samples, "ippool_build_info", { version: VERSION, runtime: "bun" })).toBe(1);
});

test("only ippool_ metrics, none of prom-client's defaults", async () => {
  const text = await metrics().registry.metrics();
  for (const name of exportedNames(text)) expect(name).toStartWith("ippool_");
  expect(text).not.toContain("process_");
  expect(text).not.toContain("nodejs_");
});

test("the whole exposition, with every kind of sample recorded, passes promtool check metrics", async () => {
  const m = metrics();
  m.pools.allocated("vms", "vm");
  m.pools.allocationFailed("vms", "vm", "exhausted");
  m.leaks.checked(["vms"], new Map([["vms", 2]]));
  m.leaks.released("vms", 2);
  m.associations.succeeded("associate", 0.05);
  m.associations.failed("associate", "HOST_UNAVAILABLE");
  m.reconciliation.succeeded("hv1", 0.02, { added: 1, removed: 0, changed: 0 });
  m.hostCommands.command("hv1", "nft", 0.004, null);
  m.hostCommands.command("hv1", "conntrack", 0.004, "exit_status");
  m.requests.request("GET", "/api/v1/ip/:vm_id", 200, 0.0004);
  const text = await m.registry.metrics();
  const samples = parseExposition(text);
  expect(sampleValue(samples, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(2);
  expect(sampleValue(samples, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(2);
  // Leak detection is about VM pools only.
  expect(text).not.toContain('ippool_pool_leaked_allocations{pool="public"}');
  const { code, output } = await promtool(["check", "metrics"], text);
  expect(output).toBe("");
  expect(code).toBe(0);
});
