/**
 * Wire compatibility with the original IP Pool API, judged against its source (`spluca/ippool`,
 * commit 692ad766 "Initial commit": src/main.rs, src/handlers.rs, src/ippool.rs). The daemon is
 * started exactly as the original's README starts it, with its flags only, and every case names
 * the line of the original whose behaviour it pins. What ippool answers differently on purpose is
 * listed in the README ("Differences from the original API") and checked there, not here.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import type { Subprocess } from "bun";
import { BINARY, tempDir } from "../support/daemon.ts";
import { freePort } from "../support/free-port.ts";
import { eventually, sh } from "../support/processes.ts";

let dir: string;
let port: number;
let proc: Subprocess;
const base = () => `http://127.0.0.1:${port}`;

/** A fresh daemon with the original's flags only (its data and socket land in a temp working directory). */
async function startOriginalStyle(): Promise<void> {
  dir = tempDir("ippool-compat-");
  port = freePort();
  proc = Bun.spawn([BINARY, "--port", String(port), "--network", "192.168.1", "--gateway", "192.168.1.1"], {
    cwd: dir,
    stdout: "ignore",
    stderr: "ignore",
  });
  const up = await eventually(
    async () => (await fetch(`${base()}/api/v1/health`).catch(() => null))?.status === 200,
    20_000,
    20,
  );
  if (!up) throw new Error("the daemon did not answer /api/v1/health");
}

async function stop(): Promise<void> {
  proc.kill("SIGTERM");
  await proc.exited;
  rmSync(dir, { recursive: true, force: true });
}

// biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field
type Answer = { status: number; body: any; headers: Headers };

async function call(method: string, path: string, body?: unknown): Promise<Answer> {
  const response = await fetch(`${base()}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
  const text = await response.text();
  return { status: response.status, body: text === "" ? null : JSON.parse(text), headers: response.headers };
}

const allocate = (vmId: string, hostname?: string) =>
  call("POST", "/api/v1/ip/allocate", { vm_id: vmId, ...(hostname === undefined ? {} : { hostname }) });
const stats = async () => (await call("GET", "/api/v1/ip/stats")).body;

describe("the original's endpoints, with its flags (--port P --network 192.168.1 --gateway 192.168.1.1)", () => {
  beforeAll(startOriginalStyle);
  afterAll(stop);

  test("health: 200 {status: healthy} (handlers.rs:66-70)", async () => {
    expect(await call("GET", "/api/v1/health")).toMatchObject({ status: 200, body: { status: "healthy" } });
  });

  test("health over HTTP/1.0 without a Host header, as HAProxy's httpchk sends it: 200 (hyper serves HTTP/1.0)", async () => {
    const { stdout } = await sh(["curl", "-s", "-i", "--http1.0", "-H", "Host:", `${base()}/api/v1/health`]);
    expect(stdout).toMatch(/^HTTP\/1\.[01] 200/);
    expect(stdout).toContain('{"status":"healthy"}');
  });

  test("allocate: 201 {ip, vm_id, gateway, network, hostname} from .2 up (handlers.rs:73-89, ippool.rs:84-105)", async () => {
    const { status, body } = await allocate("srv-abc123", "my-vm");
    expect(status).toBe(201);
    expect(body).toMatchObject({
      ip: "192.168.1.2",
      vm_id: "srv-abc123",
      gateway: "192.168.1.1",
      network: "192.168.1.0/24",
      hostname: "my-vm",
    });
  });

  test("a repeat allocate: 201 again with the same address (ippool.rs:88-90, handlers.rs:88)", async () => {
    const { status, body } = await allocate("srv-abc123");
    expect(status).toBe(201);
    expect(body.ip).toBe("192.168.1.2");
  });

  test("get: 200 {ip, vm_id} (handlers.rs:120-126)", async () => {
    expect(await call("GET", "/api/v1/ip/srv-abc123")).toMatchObject({
      status: 200,
      body: { ip: "192.168.1.2", vm_id: "srv-abc123" },
    });
  });

  test("get and release of an unknown vm_id: 404 {error: IP not found} (handlers.rs:56, ippool.rs:108-124)", async () => {
    for (const [method, path] of [
      ["GET", "/api/v1/ip/nobody"],
      ["DELETE", "/api/v1/ip/release/nobody"],
    ] as const) {
      const answer = await call(method, path);
      expect(answer.status).toBe(404);
      expect(answer.body.error).toBe("IP not found");
    }
  });

  test("release-by-ip of text that is no address, or an address outside the network: 400 {error: Invalid IP address} (handlers.rs:57, ippool.rs:127-135, 200-209)", async () => {
    for (const ip of ["abc", "192.168.1.02", "192.168.1.300", "10.0.0.5", "192.168.10.5"]) {
      const answer = await call("DELETE", `/api/v1/ip/release-by-ip/${ip}`);
      expect([ip, answer.status, answer.body.error]).toEqual([ip, 400, "Invalid IP address"]);
    }
  });

  test("release-by-ip of a free address in the network: 404 {error: IP not found} (ippool.rs:136-150)", async () => {
    const answer = await call("DELETE", "/api/v1/ip/release-by-ip/192.168.1.77");
    expect([answer.status, answer.body.error]).toEqual([404, "IP not found"]);
  });

  test("release and release-by-ip: 200 {message, vm_id} / {message, ip} (handlers.rs:92-117)", async () => {
    await allocate("rel-1");
    const byVm = await call("DELETE", "/api/v1/ip/release/rel-1");
    expect(byVm).toMatchObject({ status: 200, body: { message: "IP released successfully", vm_id: "rel-1" } });
    const { body } = await allocate("rel-2");
    const byIp = await call("DELETE", `/api/v1/ip/release-by-ip/${body.ip}`);
    expect(byIp).toMatchObject({ status: 200, body: { message: "IP released successfully", ip: body.ip } });
  });

  test("list: 200, an array of {ip, vm_id} (handlers.rs:129-134, ippool.rs:171-179)", async () => {
    const { status, body } = await call("GET", "/api/v1/ip/allocations");
    expect(status).toBe(200);
    expect(body).toContainEqual(expect.objectContaining({ ip: "192.168.1.2", vm_id: "srv-abc123" }));
  });

  test("stats: {total, allocated, available, usage, network, gateway} over .2-.254 (ippool.rs:182-197)", async () => {
    expect(await stats()).toMatchObject({
      total: 253,
      allocated: 1,
      available: 252,
      network: "192.168.1.0/24",
      gateway: "192.168.1.1",
    });
    expect((await stats()).usage).toBeCloseTo((1 / 253) * 100, 10);
  });

  test("any text is a vm_id and a hostname, as the original's String fields (handlers.rs:17-22); lookups decode the path (axum's Path)", async () => {
    const cases: [string, string][] = [
      ["vm-ñandú", "my_vm"],
      ["vm with space", ""],
      ["a/b", "Web Server"],
      ["v".repeat(200), "x"],
      ["😀 emoji", "-web-"],
    ];
    for (const [vmId, hostname] of cases) {
      const made = await allocate(vmId, hostname);
      expect([vmId, made.status, made.body.vm_id, made.body.hostname]).toEqual([vmId, 201, vmId, hostname]);
      const found = await call("GET", `/api/v1/ip/${encodeURIComponent(vmId)}`);
      expect([vmId, found.status, found.body.ip]).toEqual([vmId, 200, made.body.ip]);
    }
    const released = await call("DELETE", `/api/v1/ip/release/${encodeURIComponent("a/b")}`);
    expect([released.status, released.body.vm_id]).toEqual([200, "a/b"]);
    const unknown = await call("GET", `/api/v1/ip/${encodeURIComponent("no one here")}`);
    expect([unknown.status, unknown.body.error]).toEqual([404, "IP not found"]);
  });

  test("a wrong method on a known path: 405 with Allow (axum's method router)", async () => {
    for (const [method, path, allow] of [
      ["PUT", "/api/v1/ip/allocate", "POST"],
      ["GET", "/api/v1/ip/allocate", "POST"],
      ["POST", "/api/v1/health", "GET,HEAD"],
      ["DELETE", "/api/v1/ip/srv-abc123", "GET,HEAD"],
      ["GET", "/api/v1/ip/release/srv-abc123", "DELETE"],
    ] as const) {
      const answer = await call(method, path);
      expect([method, path, answer.status, answer.headers.get("allow")]).toEqual([method, path, 405, allow]);
    }
  });

  test("an unknown route: 404 (axum's fallback)", async () => {
    expect((await call("GET", "/api/v2/health")).status).toBe(404);
  });
});

/** The original's nine unit tests (ippool.rs:241-358), each on a fresh pool, over HTTP. */
describe("the original's nine tests, over HTTP", () => {
  const fresh = (name: string, body: () => Promise<void>) =>
    test(name, async () => {
      await startOriginalStyle();
      try {
        await body();
      } finally {
        await stop();
      }
    });

  fresh("test_new_ip_pool (241-249): total 253, allocated 0, available 253", async () => {
    expect(await stats()).toMatchObject({ total: 253, allocated: 0, available: 253 });
  });

  fresh("test_allocate_ip (251-261): vm-1 gets the first address; 1 allocated, 252 available", async () => {
    expect((await allocate("vm-1")).body.ip).toBe("192.168.1.2");
    expect(await stats()).toMatchObject({ allocated: 1, available: 252 });
  });

  fresh("test_allocate_ip_idempotent (263-274): vm-1 twice, same address, 1 allocated", async () => {
    const first = await allocate("vm-1");
    const second = await allocate("vm-1");
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.body.ip).toBe(first.body.ip);
    expect((await stats()).allocated).toBe(1);
  });

  fresh("test_release_ip (276-286): allocate then release vm-1; 0 allocated, 253 available", async () => {
    await allocate("vm-1");
    expect((await call("DELETE", "/api/v1/ip/release/vm-1")).status).toBe(200);
    expect(await stats()).toMatchObject({ allocated: 0, available: 253 });
  });

  fresh("test_release_ip_by_address (288-297): allocate vm-1, release its address; 0 allocated", async () => {
    const { body } = await allocate("vm-1");
    expect((await call("DELETE", `/api/v1/ip/release-by-ip/${body.ip}`)).status).toBe(200);
    expect((await stats()).allocated).toBe(0);
  });

  fresh("test_get_allocation (299-308): get vm-1 answers its address and vm_id", async () => {
    const { body } = await allocate("vm-1");
    expect((await call("GET", "/api/v1/ip/vm-1")).body).toMatchObject({ ip: body.ip, vm_id: "vm-1" });
  });

  fresh("test_list_allocations (310-320): three allocations are listed", async () => {
    for (const vm of ["vm-1", "vm-2", "vm-3"]) await allocate(vm);
    expect((await call("GET", "/api/v1/ip/allocations")).body).toHaveLength(3);
  });

  fresh("test_no_available_ips (322-331): after 253 allocations the next is 503 No available IPs in pool", async () => {
    for (let i = 0; i < 253; i++) expect((await allocate(`vm-${i}`)).status).toBe(201);
    const overflow = await allocate("vm-overflow");
    expect([overflow.status, overflow.body.error]).toEqual([503, "No available IPs in pool"]);
  });

  fresh("test_concurrent_allocations (333-358): 100 at once get 100 distinct addresses; 100 allocated", async () => {
    const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => allocate(`vm-${i}`)));
    expect(answers.every((answer) => answer.status === 201)).toBe(true);
    expect(new Set(answers.map((answer) => answer.body.ip)).size).toBe(100);
    expect((await stats()).allocated).toBe(100);
  });
});
