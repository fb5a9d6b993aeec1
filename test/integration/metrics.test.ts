/**
 * `GET /metrics` on the compiled daemon: after real allocations, releases, refusals and EIP calls
 * the values match what the API says, the output passes the real `promtool check metrics`, and
 * the shipped alert rules and Grafana dashboard only use metrics the daemon exports.
 *
 * The daemon has one hypervisor host it cannot reach (nothing listens on its port), so the
 * host, association and reconciliation metrics have something to show without a testbed; the
 * host suite (test/hosts/eip-daemon.test.ts) checks them against reachable hosts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { configToml } from "../support/config-toml.ts";
import { Daemon, tempDir } from "../support/daemon.ts";
import { eventually, sh } from "../support/processes.ts";
import {
  exportedNames,
  parseExposition,
  promtool,
  type Sample,
  samplesOf,
  sampleValue,
} from "../support/prometheus.ts";

const ROOT = resolve(import.meta.dir, "../..");
const ALERTS = join(ROOT, "docs/prometheus/alerts.yml");
const DASHBOARD = join(ROOT, "docs/grafana/ippool.json");
const KEY = "acme-metrics-key";

let daemon: Daemon;
let keyDir: string;

beforeAll(async () => {
  keyDir = tempDir("ippool-metrics-key-");
  await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(keyDir, "id")]);
  daemon = await Daemon.start({
    config: configToml({
      reconcileIntervalS: 1,
      pools: [{ name: "vms", cidr: "10.20.0.0/29", gateway: "10.20.0.1" }],
      eipPools: { public: "100.64.0.0/24" },
      projects: [{ name: "acme", apiKey: KEY, quota: 2 }],
      hosts: [
        {
          name: "hv9",
          address: "127.0.0.1",
          port: 1,
          user: "root",
          privateKeyPath: join(keyDir, "id"),
          hostKey: `SHA256:${"A".repeat(43)}`,
          publicInterface: "eth0",
          connectTimeoutMs: 500,
          commandTimeoutMs: 1000,
        },
      ],
    }),
  });
}, 30_000);

afterAll(async () => {
  await daemon?.dispose();
  await sh(["rm", "-rf", keyDir]);
});

const allocate = (body: unknown) => daemon.post("/api/v1/ip/allocate", body);
const eipCall = (method: string, path: string, body?: unknown) =>
  daemon.json(path, {
    method,
    headers: { "x-api-key": KEY, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

async function scrape(via: "tcp" | "unix" = "tcp"): Promise<{ text: string; samples: Sample[] }> {
  const response = await daemon.fetch("/metrics", { via });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const text = await response.text();
  return { text, samples: parseExposition(text) };
}

describe("after real traffic", () => {
  let samples: Sample[];
  let text: string;

  beforeAll(async () => {
    // A /29 with its gateway: 10.20.0.2 to 10.20.0.6 can be handed out.
    expect((await allocate({ vm_id: "vm-a", host: "hv9" })).status).toBe(201);
    expect((await allocate({ vm_id: "vm-a", host: "hv9" })).status).toBe(201); // a repeat
    expect((await allocate({ vm_id: "vm-b", ip: "10.20.0.2" })).status).toBe(409); // held by vm-a
    expect((await allocate({ vm_id: "vm-b", ip: "10.20.0.1" })).status).toBe(400); // the gateway
    for (const vm of ["vm-b", "vm-c", "vm-d", "vm-e"]) expect((await allocate({ vm_id: vm })).status).toBe(201);
    expect((await allocate({ vm_id: "vm-f" })).status).toBe(503);
    expect((await daemon.json("/api/v1/ip/release/vm-e", { method: "DELETE" })).status).toBe(200);
    expect((await daemon.json("/api/v1/ip/vm-a")).status).toBe(200);
    expect((await daemon.json("/api/v1/ip/nobody")).status).toBe(404);
    expect((await daemon.json("/no/such/path")).status).toBe(404);

    const first = await eipCall("POST", "/elastic-ips");
    expect(first.status).toBe(201);
    expect((await eipCall("POST", "/elastic-ips")).status).toBe(201);
    expect((await eipCall("POST", "/elastic-ips")).body.code).toBe("QUOTA_EXCEEDED");
    // vm-a runs on hv9, which cannot be reached: 502, counted as an association failure.
    const associated = await eipCall("POST", `/elastic-ips/${first.body.id}/associate`, { instance_id: "vm-a" });
    expect(associated.status).toBe(502);
    expect(associated.body.code).toBe("HOST_UNAVAILABLE");
    expect((await eipCall("DELETE", `/elastic-ips/${first.body.id}`)).status).toBe(200);

    ({ text, samples } = await scrape());
  });

  const vm = { pool: "vms", kind: "vm" };
  const eip = { pool: "public", kind: "eip" };

  test("addresses by state equal the pool's stats, and the size is its total", async () => {
    const { body: stats } = await daemon.json("/api/v1/ip/stats?pool=vms");
    expect(stats.allocated).toBe(4);
    expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "allocated" })).toBe(stats.allocated);
    expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "available" })).toBe(stats.available);
    expect(sampleValue(samples, "ippool_pool_addresses", { ...vm, state: "reserved" })).toBe(3);
    expect(sampleValue(samples, "ippool_pool_size_addresses", vm)).toBe(stats.total);
    expect(sampleValue(samples, "ippool_pool_addresses", { ...eip, state: "allocated" })).toBe(1);
    expect(sampleValue(samples, "ippool_pool_size_addresses", eip)).toBe(254);
  });

  test("allocations, releases and each refusal are counted once", () => {
    expect(sampleValue(samples, "ippool_pool_allocations_total", vm)).toBe(5);
    expect(sampleValue(samples, "ippool_pool_releases_total", vm)).toBe(1);
    const failures = (labels: Record<string, string>, reason: string) =>
      sampleValue(samples, "ippool_pool_allocation_failures_total", { ...labels, reason });
    expect(failures(vm, "exhausted")).toBe(1); // the 503
    expect(failures(vm, "address_in_use")).toBe(1); // the 409
    expect(failures(vm, "invalid_ip")).toBe(1); // the 400
    expect(failures(vm, "vm_has_other_address")).toBe(0);
    expect(sampleValue(samples, "ippool_pool_allocations_total", eip)).toBe(2);
    expect(sampleValue(samples, "ippool_pool_releases_total", eip)).toBe(1);
    expect(failures(eip, "quota_exceeded")).toBe(1);
  });

  test("EIPs by pool, project and state", () => {
    expect(sampleValue(samples, "ippool_eips", { pool: "public", project: "acme", state: "allocated" })).toBe(1);
    expect(sampleValue(samples, "ippool_eips", { pool: "public", project: "acme", state: "associated" })).toBe(0);
  });

  test("the HTTP histogram is labelled by route template and status, never by raw path", () => {
    const count = "ippool_http_request_duration_seconds_count";
    const labels = (route: string, status: string, method = "POST") => ({ method, route, status });
    expect(sampleValue(samples, count, labels("/api/v1/ip/allocate", "201"))).toBe(6); // a repeat is 201 too
    expect(sampleValue(samples, count, labels("/api/v1/ip/allocate", "503"))).toBe(1);
    expect(sampleValue(samples, count, labels("/api/v1/ip/allocate", "409"))).toBe(1);
    expect(sampleValue(samples, count, labels("/api/v1/ip/:vm_id", "200", "GET"))).toBe(1);
    expect(sampleValue(samples, count, labels("/api/v1/ip/:vm_id", "404", "GET"))).toBe(1);
    expect(sampleValue(samples, count, labels("/api/v1/ip/release/:vm_id", "200", "DELETE"))).toBe(1);
    expect(sampleValue(samples, count, labels("/elastic-ips/:id/associate", "502"))).toBe(1);
    expect(sampleValue(samples, count, labels("unmatched", "404", "GET"))).toBe(1);
    for (const sample of samplesOf(samples, count)) {
      expect(sample.labels.route === "unmatched" || (sample.labels.route as string).startsWith("/")).toBe(true);
      expect(sample.labels.route).not.toMatch(/vm-a|nobody|no\/such|eip-[0-9a-f]/);
    }
  });

  test("an unreachable host: down, its commands and the association failed as unavailable", () => {
    expect(sampleValue(samples, "ippool_host_up", { host: "hv9" })).toBe(0);
    expect(
      sampleValue(samples, "ippool_eip_association_failures_total", {
        operation: "associate",
        code: "HOST_UNAVAILABLE",
      }),
    ).toBe(1);
    expect(
      sampleValue(samples, "ippool_host_command_failures_total", {
        host: "hv9",
        command: "virsh",
        reason: "unavailable",
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  test("reconciliation of the unreachable host fails, and is counted", async () => {
    const failed = async () => {
      const { samples } = await scrape();
      return sampleValue(samples, "ippool_reconciliation_failures_total", { host: "hv9" }) >= 1;
    };
    expect(await eventually(failed, 5000)).toBe(true);
    const { samples: now } = await scrape();
    expect(sampleValue(now, "ippool_reconciliation_duration_seconds_count", { host: "hv9" })).toBe(0);
    expect(samplesOf(now, "ippool_reconciliation_corrections_total", { host: "hv9" })).toHaveLength(3);
  });

  test("a leak check with the host unreachable answers 503 and leaves the leak metrics at zero", async () => {
    for (const [method, path] of [
      ["GET", "/api/v1/leaks"],
      ["POST", "/api/v1/leaks/release"],
    ] as const) {
      const { status, body } = await daemon.json(path, { method });
      expect(status).toBe(503);
      expect(body.code).toBe("LEAK_CHECK_INCOMPLETE");
      expect(body.error).toContain("host hv9");
    }
    expect((await daemon.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(4);
    const { samples: now } = await scrape();
    expect(sampleValue(now, "ippool_pool_leaked_allocations", { pool: "vms" })).toBe(0);
    expect(sampleValue(now, "ippool_pool_leaks_released_total", { pool: "vms" })).toBe(0);
    const count = (method: string, route: string) =>
      sampleValue(now, "ippool_http_request_duration_seconds_count", { method, route, status: "503" });
    expect(count("GET", "/api/v1/leaks")).toBe(1);
    expect(count("POST", "/api/v1/leaks/release")).toBe(1);
  });

  test("LMDB sizes and build info", () => {
    const mapSize = sampleValue(samples, "ippool_store_map_size_bytes");
    const used = sampleValue(samples, "ippool_store_used_bytes");
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThanOrEqual(mapSize);
    expect(sampleValue(samples, "ippool_build_info", { runtime: "bun" })).toBe(1);
  });

  test("only ippool's own metrics are exported", () => {
    for (const name of exportedNames(text)) expect(name).toStartWith("ippool_");
  });

  test("the real output passes promtool check metrics (exit 0, nothing printed)", async () => {
    const { code, output } = await promtool(["check", "metrics"], text);
    expect(output).toBe("");
    expect(code).toBe(0);
  });

  test("the Unix socket serves the same metrics, and they pass promtool too", async () => {
    const { text: viaSocket, samples: socketSamples } = await scrape("unix");
    expect(exportedNames(viaSocket)).toEqual(exportedNames(text));
    expect(sampleValue(socketSamples, "ippool_pool_addresses", { ...vm, state: "allocated" })).toBe(4);
    const { code, output } = await promtool(["check", "metrics"], viaSocket);
    expect(output).toBe("");
    expect(code).toBe(0);
  });

  test("scraping counts itself under /metrics, and does not change what it reports", async () => {
    const before = (await scrape()).samples;
    const after = (await scrape()).samples;
    const scrapes = (s: Sample[]) =>
      sampleValue(s, "ippool_http_request_duration_seconds_count", { method: "GET", route: "/metrics", status: "200" });
    expect(scrapes(after)).toBe(scrapes(before) + 1);
    expect(sampleValue(after, "ippool_pool_addresses", { ...vm, state: "allocated" })).toBe(4);
  });
});

/** Metric names a PromQL expression selects (functions, keywords, labels, strings and ranges left out). */
function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")
    .replace(/\$\{?\w+\}?/g, "");
  const keywords = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);
  return [...bare.matchAll(/(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()/g)]
    .map((m) => m[1] as string)
    .filter((name) => !keywords.has(name.toLowerCase()));
}

describe("metricNamesIn", () => {
  test.each([
    ["ippool_host_up == 0", ["ippool_host_up"]],
    [
      'sum by (pool, kind) (rate(ippool_pool_allocations_total{instance=~"$instance"}[$__rate_interval]))',
      ["ippool_pool_allocations_total"],
    ],
    [
      'ippool_pool_addresses{state="allocated"} / on (instance, pool) ippool_pool_size_addresses > 0.9',
      ["ippool_pool_addresses", "ippool_pool_size_addresses"],
    ],
    ["histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) unless on (host) y offset 5m", ["x_bucket", "y"]],
  ])("%s selects %j", (expr, names) => {
    expect(metricNamesIn(expr)).toEqual(names);
  });
});

describe("alert rules (docs/prometheus/alerts.yml)", () => {
  test("pass promtool check rules", async () => {
    const { code, output } = await promtool(["check", "rules", ALERTS]);
    expect(output).toContain("SUCCESS: 6 rules found");
    expect(code).toBe(0);
  });

  test("only use metrics the daemon exports", async () => {
    const exported = exportedNames((await scrape()).text);
    const rules = (Bun.YAML.parse(readFileSync(ALERTS, "utf8")) as { groups: { rules: { expr: string }[] }[] }).groups
      .flatMap((group) => group.rules)
      .map((rule) => rule.expr);
    expect(rules).toHaveLength(6);
    for (const expr of rules) {
      const names = metricNamesIn(expr);
      expect(names.length).toBeGreaterThan(0);
      for (const name of names)
        expect({ expr, name, exported: exported.has(name) }).toEqual({ expr, name, exported: true });
    }
  });

  test("fire on the series they describe (promtool test rules)", async () => {
    const dir = tempDir("ippool-alerts-test-");
    const at = { instance: "ippool:8080", job: "ippool" };
    const series = (name: string, labels: Record<string, string>, values: string) => ({
      series: `${name}{${Object.entries({ ...at, ...labels })
        .map(([k, v]) => `${k}="${v}"`)
        .join(",")}}`,
      values,
    });
    const vm = { pool: "vms", kind: "vm" };
    const fired = (alertname: string, labels: Record<string, string>, severity: string) => ({
      eval_time: "20m",
      alertname,
      exp_alerts: [{ exp_labels: { ...at, ...labels, severity } }],
    });
    // The rules as shipped, without their annotations: promtool compares annotations exactly, and
    // their templates are checked by `promtool check rules` above. JSON is YAML to promtool.
    const shipped = Bun.YAML.parse(readFileSync(ALERTS, "utf8")) as {
      groups: { rules: { annotations?: unknown }[] }[];
    };
    for (const group of shipped.groups) for (const rule of group.rules) delete rule.annotations;
    writeFileSync(join(dir, "alerts.json"), JSON.stringify(shipped));
    const tests = {
      rule_files: [join(dir, "alerts.json")],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: [
            series("ippool_pool_addresses", { ...vm, state: "allocated" }, "240x30"),
            series("ippool_pool_size_addresses", vm, "253x30"),
            series("ippool_pool_allocations_total", vm, "0+1x30"),
            series("ippool_pool_allocation_failures_total", { ...vm, reason: "exhausted" }, "0+1x30"),
            series("ippool_host_up", { host: "hv1" }, "1 1 1 0x30"),
            series("ippool_host_up", { host: "hv2" }, "1x30"),
            series("ippool_reconciliation_failures_total", { host: "hv1" }, "0+1x30"),
            series("ippool_reconciliation_duration_seconds_count", { host: "hv1" }, "0x30"),
            series("ippool_reconciliation_failures_total", { host: "hv2" }, "0x30"),
            series("ippool_reconciliation_duration_seconds_count", { host: "hv2" }, "0+1x30"),
            series("ippool_store_full", {}, "0 0 1x30"),
          ],
          alert_rule_test: [
            fired("IppoolPoolAlmostFull", vm, "warning"),
            fired("IppoolPoolExhausted", vm, "critical"),
            fired("IppoolAllocationFailures", vm, "warning"),
            fired("IppoolHostDown", { host: "hv1" }, "critical"),
            fired("IppoolReconciliationFailing", { host: "hv1" }, "warning"),
            fired("IppoolStorageFull", {}, "critical"),
            // Not before their `for:` has passed.
            { eval_time: "5m", alertname: "IppoolPoolAlmostFull", exp_alerts: [] },
            { eval_time: "4m", alertname: "IppoolHostDown", exp_alerts: [] },
            { eval_time: "2m", alertname: "IppoolStorageFull", exp_alerts: [] },
          ],
        },
      ],
    };
    const file = join(dir, "alerts.test.yml");
    writeFileSync(file, JSON.stringify(tests));
    try {
      const { code, output } = await promtool(["test", "rules", file]);
      expect(output).toContain("SUCCESS");
      expect(code).toBe(0);
    } finally {
      await sh(["rm", "-rf", dir]);
    }
  });
});

describe("Grafana dashboard (docs/grafana/ippool.json)", () => {
  interface Panel {
    title: string;
    type: string;
    targets?: { expr: string }[];
  }
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as {
    panels: Panel[];
    templating: { list: { query: unknown }[] };
  };
  const panels = dashboard.panels.filter((panel) => panel.type !== "row");
  const expressions = [
    ...panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr)),
    ...dashboard.templating.list.flatMap(({ query }) => {
      const text = typeof query === "string" ? query : ((query as { query?: string } | null)?.query ?? "");
      // label_values(metric, label): the metric is the first argument.
      const match = /^label_values\(\s*([^,)]+)/.exec(text);
      return match ? [match[1] as string] : [];
    }),
  ];

  test("every panel queries something", () => {
    expect(panels.length).toBeGreaterThanOrEqual(10);
    for (const panel of panels)
      expect({ title: panel.title, targets: panel.targets?.length ?? 0 }).not.toMatchObject({ targets: 0 });
  });

  test("every expression only uses metrics the daemon exports, and every exported metric is shown", async () => {
    const text = (await scrape()).text;
    const exported = exportedNames(text);
    const used = new Set<string>();
    for (const expr of expressions) {
      const names = metricNamesIn(expr);
      expect(names.length).toBeGreaterThan(0);
      for (const name of names) {
        expect({ expr, name, exported: exported.has(name) }).toEqual({ expr, name, exported: true });
        used.add(name);
      }
    }
    const families = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] as string);
    for (const family of families) {
      expect({ family, shown: [...used].some((name) => name === family || name.startsWith(`${family}_`)) }).toEqual({
        family,
        shown: true,
      });
    }
  });
});
