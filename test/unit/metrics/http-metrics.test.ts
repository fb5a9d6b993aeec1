/**
 * HTTP metrics: the factory bounds its labels; through the real app and handler, every request
 * is recorded under the route template it matched (never its path), with its status.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { Registry } from "prom-client";
import { AdminGate } from "../../../src/auth/admin.ts";
import { ProjectDirectory } from "../../../src/auth/projects.ts";
import { EipAssociations } from "../../../src/eip/association.ts";
import type { HostGateway } from "../../../src/eip/hosts.ts";
import { KeyedLocks } from "../../../src/eip/locks.ts";
import { createApp, createHandler } from "../../../src/http/app.ts";
import { Logger } from "../../../src/log/logger.ts";
import { httpMetrics } from "../../../src/metrics/http-metrics.ts";
import { LeakDetector } from "../../../src/pool/leaks.ts";
import type { FetchHandler } from "../../../src/runtime/index.ts";
import { parseExposition, samplesOf, sampleValue } from "../../support/prometheus.ts";
import { type StoreFixture, storeFixture } from "../../support/store-fixture.ts";

const COUNT = "ippool_http_request_duration_seconds_count";

describe("httpMetrics", () => {
  test("labels: method, route template or 'unmatched', status; unusual methods are 'other'", async () => {
    const registry = new Registry();
    const recorder = httpMetrics(registry);
    recorder.request("GET", "/api/v1/ip/:vm_id", 200, 0.0003);
    recorder.request("GET", "/api/v1/ip/:vm_id", 200, 0.002);
    recorder.request("GET", undefined, 404, 0.0001);
    recorder.request("BREW", undefined, 404, 0.0001);
    const samples = parseExposition(await registry.metrics());
    expect(sampleValue(samples, COUNT, { method: "GET", route: "/api/v1/ip/:vm_id", status: "200" })).toBe(2);
    expect(
      sampleValue(samples, "ippool_http_request_duration_seconds_bucket", {
        route: "/api/v1/ip/:vm_id",
        le: "0.0005",
      }),
    ).toBe(1);
    expect(sampleValue(samples, COUNT, { method: "GET", route: "unmatched", status: "404" })).toBe(1);
    expect(sampleValue(samples, COUNT, { method: "other", route: "unmatched", status: "404" })).toBe(1);
  });
});

describe("through the app", () => {
  const KEY = "acme-key";
  let fixture: StoreFixture;
  let registry: Registry;
  let handle: FetchHandler;

  beforeAll(async () => {
    fixture = await storeFixture("10.0.0.0/24");
    const { store, pools, eips } = fixture;
    const logger = new Logger("text", "error", () => {});
    const associations = new EipAssociations(store, {} as HostGateway, pools, new KeyedLocks(), logger);
    const projects = new ProjectDirectory([
      { name: "acme", apiKeySha256: createHash("sha256").update(KEY).digest("hex"), quota: 5 },
    ]);
    registry = new Registry();
    const leaks = new LeakDetector(pools, { hostNames: () => [], listDomains: async () => [] }, 900);
    const adminGate = new AdminGate(null, false);
    const app = createApp({ pools, eips, associations, projects, adminGate, leaks, metrics: registry }, logger);
    handle = createHandler(app, logger, "tcp", httpMetrics(registry));
  });

  afterAll(async () => {
    await fixture.dispose();
  });

  const call = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) =>
    (await handle(new Request(`http://localhost${path}`, { method, headers, ...(body === undefined ? {} : { body }) })))
      .status;

  test("each request counts under its route template and status", async () => {
    expect(await call("POST", "/api/v1/ip/allocate", JSON.stringify({ vm_id: "a" }))).toBe(201);
    expect(await call("POST", "/api/v1/ip/allocate", JSON.stringify({ vm_id: "a" }))).toBe(201); // a repeat
    expect(await call("POST", "/api/v1/ip/allocate", "{not json")).toBe(400);
    expect(await call("POST", "/api/v1/ip/allocate", JSON.stringify({ vm: 1 }))).toBe(422);
    expect(await call("GET", "/api/v1/ip/a")).toBe(200);
    expect(await call("GET", "/api/v1/ip/b")).toBe(404);
    expect(await call("DELETE", "/api/v1/ip/release/a")).toBe(200);
    expect(await call("GET", "/elastic-ips", undefined, { "x-api-key": KEY })).toBe(200);
    const id = "eip-00000000-0000-4000-8000-000000000000";
    expect(await call("GET", `/elastic-ips/${id}`, undefined, { "x-api-key": "wrong" })).toBe(401);
    expect(await call("GET", "/no/such/route")).toBe(404);
    expect(await call("GET", "/metrics")).toBe(200);
    expect(
      await call("POST", "/api/v1/ip/allocate", "x", { "content-length": String(1024 * 1024), connection: "close" }),
    ).toBe(413);

    const samples = parseExposition(await registry.metrics());
    const count = (method: string, route: string, status: number) =>
      sampleValue(samples, COUNT, { method, route, status: String(status) });
    expect(count("POST", "/api/v1/ip/allocate", 201)).toBe(2);
    expect(count("POST", "/api/v1/ip/allocate", 400)).toBe(1);
    expect(count("POST", "/api/v1/ip/allocate", 422)).toBe(1);
    expect(count("GET", "/api/v1/ip/:vm_id", 200)).toBe(1);
    expect(count("GET", "/api/v1/ip/:vm_id", 404)).toBe(1);
    expect(count("DELETE", "/api/v1/ip/release/:vm_id", 200)).toBe(1);
    expect(count("GET", "/elastic-ips", 200)).toBe(1);
    expect(count("GET", "/elastic-ips/:id", 401)).toBe(1);
    expect(count("GET", "unmatched", 404)).toBe(1);
    // Refused before routing (the body limit): no route is known.
    expect(count("POST", "unmatched", 413)).toBe(1);
    // No raw path ever becomes a label: only templates, and "unmatched".
    expect(new Set(samplesOf(samples, COUNT).map((s) => s.labels.route))).toEqual(
      new Set([
        "/api/v1/ip/allocate",
        "/api/v1/ip/:vm_id",
        "/api/v1/ip/release/:vm_id",
        "/elastic-ips",
        "/elastic-ips/:id",
        "/metrics",
        "unmatched",
      ]),
    );
  });

  test("GET /metrics answers the registry in the text format", async () => {
    const response = await handle(new Request("http://localhost/metrics"));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await response.text()).toContain("# TYPE ippool_http_request_duration_seconds histogram");
  });
});
