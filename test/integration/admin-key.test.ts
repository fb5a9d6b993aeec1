/**
 * SPEC §7: on a TCP listener that is not loopback, the pool API needs the admin key; the Unix
 * socket and the loopback listener do not; health, metrics and the OpenAPI document stay open.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { Daemon, tempDir } from "../support/daemon.ts";

const ADMIN = "admin-secret";
const PROJECT = "acme-secret";
const sha = (key: string) => createHash("sha256").update(key).digest("hex");

function config(dir: string, adminKey: boolean): string {
  return `[server]
listen = "0.0.0.0:0"
socket = "${dir}/ippool.sock"
data_dir = "${dir}"
${adminKey ? `admin_key_sha256 = "${sha(ADMIN)}"` : ""}

[[pools]]
name = "vms"
cidr = "10.40.0.0/24"

[[eip_pools]]
name = "public"
cidr = "100.64.0.0/24"

[[projects]]
name = "acme"
api_key_sha256 = "${sha(PROJECT)}"
`;
}

const POOL_CALLS: [string, string, unknown?][] = [
  ["POST", "/api/v1/ip/allocate", { vm_id: "gated" }],
  ["GET", "/api/v1/ip/allocations"],
  ["GET", "/api/v1/ip/stats"],
  ["GET", "/api/v1/ip/gated"],
  ["DELETE", "/api/v1/ip/release/gated"],
  ["DELETE", "/api/v1/ip/release-by-ip/10.40.0.2"],
  ["GET", "/api/v1/pools"],
  ["GET", "/api/v1/pools/vms"],
  ["GET", "/api/v1/leaks"],
  ["POST", "/api/v1/leaks/release"],
];

function call(d: Daemon, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return d.fetch(path, {
    method,
    headers: { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

describe("a non-loopback listener with an admin key", () => {
  let daemon: Daemon;
  beforeAll(async () => {
    const dir = tempDir();
    daemon = await Daemon.start({ dir, pools: config(dir, true) });
  });
  afterAll(async () => {
    await daemon.dispose();
  });

  test.each([
    ["no key", {}],
    ["a wrong key", { "x-api-key": "wrong" }],
    ["a project's key", { "x-api-key": PROJECT }],
  ])("refuses every pool call over TCP with %s: 401", async (_what, headers) => {
    for (const [method, path, body] of POOL_CALLS) {
      const response = await call(daemon, method, path, body, headers);
      expect(`${method} ${path} ${response.status}`).toBe(`${method} ${path} 401`);
      expect(((await response.json()) as { code: string }).code).toBe("UNAUTHORIZED");
    }
  });

  test("answers pool calls over TCP with the admin key", async () => {
    const response = await call(daemon, "POST", "/api/v1/ip/allocate", { vm_id: "gated" }, { "x-api-key": ADMIN });
    expect(response.status).toBe(201);
    expect((await call(daemon, "GET", "/api/v1/ip/gated", undefined, { "x-api-key": ADMIN })).status).toBe(200);
  });

  test("the Unix socket needs no key", async () => {
    expect((await daemon.json("/api/v1/ip/stats", { via: "unix" })).status).toBe(200);
  });

  test("health, metrics and the OpenAPI document stay open; EIP calls take the project's key", async () => {
    for (const path of ["/api/v1/health", "/metrics", "/openapi.json"])
      expect((await daemon.fetch(path)).status).toBe(200);
    expect((await call(daemon, "GET", "/elastic-ips", undefined, { "x-api-key": PROJECT })).status).toBe(200);
    expect((await call(daemon, "GET", "/elastic-ips", undefined, { "x-api-key": ADMIN })).status).toBe(401);
  });
});

describe("a non-loopback listener without an admin key", () => {
  test("refuses pool calls over TCP, saying which key to configure, and warns at start", async () => {
    const dir = tempDir();
    const daemon = await Daemon.start({ dir, pools: config(dir, false) });
    try {
      const response = await call(daemon, "GET", "/api/v1/ip/stats");
      expect(response.status).toBe(401);
      expect(((await response.json()) as { error: string }).error).toContain("server.admin_key_sha256");
      expect((await daemon.json("/api/v1/ip/stats", { via: "unix" })).status).toBe(200);
      expect(daemon.logs).toContain("server.admin_key_sha256 is not set");
    } finally {
      await daemon.dispose();
    }
  });
});
