/** GET /openapi.json: a valid OpenAPI document, generated from the route schemas, covering every route. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { createApp, type Services } from "../../src/http/app.ts";
import { Logger } from "../../src/log/logger.ts";
import { Daemon } from "../support/daemon.ts";

interface Operation {
  responses: Record<string, { content?: { "application/json"?: { schema?: { properties?: { code?: unknown } } } } }>;
  security?: unknown[];
}
type Spec = { openapi: string; paths: Record<string, Record<string, Operation>> };

let daemon: Daemon;
let spec: Spec;
beforeAll(async () => {
  daemon = await Daemon.start();
  spec = (await daemon.json("/openapi.json")).body;
});
afterAll(async () => {
  await daemon.dispose();
});

test("is a valid OpenAPI 3 document", async () => {
  const result = await new Validator().validate(spec as never);
  expect(result.errors ?? []).toEqual([]);
  expect(result.valid).toBe(true);
  expect(spec.openapi).toStartWith("3.");
});

test("covers every route the app serves", () => {
  // Route registration needs no live services: handlers are only called per request.
  const app = createApp({} as Services, new Logger("text", "error", () => {}));
  const served = app.routes
    .filter((route) => route.path !== "/openapi.json" && route.path !== "/openapi")
    .map((route) => `${route.method.toLowerCase()} ${route.path.replace(/:(\w+)/g, "{$1}")}`);
  const documented = Object.entries(spec.paths).flatMap(([path, operations]) =>
    Object.keys(operations).map((method) => `${method} ${path}`),
  );
  expect(served.length).toBeGreaterThan(10);
  expect(documented.sort()).toEqual(served.sort());
});

test("lists the error codes each route can answer with", () => {
  const codes = (path: string, method: string, status: string) =>
    JSON.stringify(
      spec.paths[path]?.[method]?.responses[status]?.content?.["application/json"]?.schema?.properties?.code,
    );
  expect(codes("/api/v1/ip/allocate", "post", "503")).toContain("POOL_EXHAUSTED");
  expect(codes("/api/v1/ip/allocate", "post", "409")).toContain("ADDRESS_IN_USE");
  expect(codes("/elastic-ips/{id}/associate", "post", "409")).toContain("INSTANCE_NOT_RUNNING");
  expect(codes("/elastic-ips/{id}/associate", "post", "502")).toContain("HOST_UNAVAILABLE");
  expect(codes("/elastic-ips/{id}", "delete", "409")).toContain("STILL_ASSOCIATED");
  expect(codes("/elastic-ips", "get", "401")).toContain("UNAUTHORIZED");
  expect(spec.paths["/elastic-ips"]?.get?.security).toBeDefined();
});
