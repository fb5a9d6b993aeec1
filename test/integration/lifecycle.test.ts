/** Starting and stopping: listeners, the socket file, signals, logs. */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { configToml, poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit, tempDir } from "../support/daemon.ts";

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function started(options: Parameters<typeof Daemon.start>[0] = {}): Promise<Daemon> {
  const daemon = await Daemon.start(options);
  cleanup.push(() => daemon.dispose());
  return daemon;
}

describe("the Unix socket", () => {
  test("is created with mode 0660", async () => {
    const daemon = await started();
    expect(statSync(daemon.socket).mode & 0o777).toBe(0o660);
  });

  test("SIGTERM stops the daemon with exit 0 and removes the socket", async () => {
    const daemon = await started();
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(daemon.socket)).toBe(false);
    expect(daemon.logs).toContain("stopped");
  });

  test("a stale socket file left by a killed daemon is replaced", async () => {
    const first = await started();
    await first.kill9();
    expect(existsSync(first.socket)).toBe(true);
    const second = await started({ dir: first.dir });
    expect((await second.json("/api/v1/health", { via: "unix" })).status).toBe(200);
  });

  test("a socket a live daemon answers on is not taken over", async () => {
    const first = await started({ tcp: false });
    const dir = tempDir();
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const config = join(dir, "second.toml");
    writeFileSync(
      config,
      configToml({
        server: { listen: "", socket: first.socket, dataDir: dir },
        pools: [{ name: "a", cidr: "10.1.0.0/24" }],
      }),
    );
    const second = await runToExit(["--config", config]);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain("another daemon is answering");
    expect((await first.json("/api/v1/health", { via: "unix" })).status).toBe(200);
  });
});

describe("one daemon per data directory", () => {
  const twoPools = poolsToml([
    { name: "a", cidr: "10.1.0.0/24" },
    { name: "b", cidr: "10.2.0.0/24" },
  ]);

  /** A second daemon's config on `dir`: its own socket, no TCP, and only pool "a". */
  function secondConfig(dir: string): string {
    const path = join(dir, "second.toml");
    const socket = join(dir, "second.sock");
    writeFileSync(
      path,
      configToml({ server: { listen: "", socket, dataDir: dir }, pools: [{ name: "a", cidr: "10.1.0.0/24" }] }),
    );
    return path;
  }

  test("a second daemon with another config refuses to start, naming the first's pid, and changes nothing", async () => {
    const first = await started({ config: twoPools });
    expect((await first.post("/api/v1/ip/allocate", { vm_id: "vm-b", pool: "b" })).status).toBe(201);
    const second = await runToExit(["--config", secondConfig(first.dir)]);
    expect(second.code).toBe(1);
    expect(second.stderr.trim().split("\n")).toEqual([
      `ippool: error: data directory ${first.dir} is in use by another ippool daemon (pid ${first.proc.pid}): stop it first, or give this one its own --data-dir`,
    ]);
    // Pool "b", which the second config lacks, is intact and still in service.
    expect((await first.json("/api/v1/ip/vm-b?pool=b")).body.ip).toBe("10.2.0.2");
    expect((await first.post("/api/v1/ip/allocate", { vm_id: "vm-b2", pool: "b" })).status).toBe(201);
  });

  test("the lock dies with its daemon: after kill -9 the next one starts on the directory", async () => {
    const first = await started({ config: twoPools });
    await first.kill9();
    const next = await started({ dir: first.dir, config: twoPools });
    expect((await next.json("/api/v1/health")).status).toBe(200);
    expect(readFileSync(join(first.dir, "daemon.lock"), "utf8")).toBe(`${next.proc.pid}\n`);
  });

  test("fsck reads a directory a daemon holds without taking its lock", async () => {
    const first = await started({ config: twoPools });
    const check = await runToExit(["fsck", "--config", first.configPath]);
    expect(check.code).toBe(0);
    expect((await first.json("/api/v1/health")).status).toBe(200);
  });
});

describe("the TCP listener", () => {
  test("a port already in use is a startup error, not a second listener", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    cleanup.push(() => void blocker.close());
    const port = (blocker.address() as { port: number }).port;
    const dir = tempDir();
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const result = await runToExit(["--listen", `127.0.0.1:${port}`, "--socket", "", "--data-dir", dir]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`listen 127.0.0.1:${port}`);
  });

  test("in-flight requests finish before SIGTERM closes the store", async () => {
    const daemon = await started();
    const inflight = Array.from({ length: 100 }, (_, i) => daemon.post("/api/v1/ip/allocate", { vm_id: `term-${i}` }));
    await Promise.race(inflight); // the first answered: the others are in flight or queued
    daemon.proc.kill("SIGTERM");
    const settled = await Promise.allSettled(inflight);
    expect(await daemon.proc.exited).toBe(0);
    const acknowledged = settled.flatMap((s) =>
      s.status === "fulfilled" && s.value.status === 201 ? [s.value.body] : [],
    );
    const again = await started({ dir: daemon.dir });
    const stored = (await again.json("/api/v1/ip/allocations")).body as { vm_id: string }[];
    const storedIds = new Set(stored.map((a) => a.vm_id));
    expect(acknowledged.every((a: { vm_id: string }) => storedIds.has(a.vm_id))).toBe(true);
  });
});

describe("logs", () => {
  test("one text line per request with method, path, status and duration", async () => {
    const daemon = await started();
    await daemon.json("/api/v1/ip/nobody");
    expect(await daemon.waitForLog("path=/api/v1/ip/nobody")).toMatch(
      /INFO request method=GET path=\/api\/v1\/ip\/nobody status=404 ms=[\d.]+/,
    );
  });

  test("--log-format json writes JSON lines", async () => {
    const daemon = await started({ args: ["--log-format", "json"] });
    await daemon.json("/api/v1/health");
    const lines = (await daemon.waitForLog('"path":"/api/v1/health"'))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines).toContainEqual(
      expect.objectContaining({ level: "info", msg: "request", method: "GET", path: "/api/v1/health", status: 200 }),
    );
  });

  test("--debug adds the listener, body size and client to each request line", async () => {
    const plain = await started();
    const debug = await started({ args: ["--debug"] });
    for (const daemon of [plain, debug]) await daemon.json("/api/v1/health", { via: "unix" });
    await Promise.all([plain, debug].map((daemon) => daemon.waitForLog("path=/api/v1/health")));
    expect(debug.logs).toMatch(/INFO request method=GET path=\/api\/v1\/health status=200 ms=[\d.]+ via=unix agent=/);
    expect(debug.logs).toContain("DEBUG configuration");
    expect(plain.logs).not.toContain("via=");
  });
});

describe("the command line", () => {
  test("--help prints the original flags", async () => {
    const result = await runToExit(["--help"]);
    expect(result.code).toBe(0);
    for (const flag of ["-p, --port", "-n, --network", "-g, --gateway", "-d, --debug", "-h, --help", "--config"]) {
      expect(result.stdout).toContain(flag);
    }
  });

  test("an unknown flag exits 2 with a usage error", async () => {
    const result = await runToExit(["--frobnicate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("frobnicate");
  });

  test("-n and -g define a /24 pool like the original daemon", async () => {
    const dir = tempDir();
    const daemon = await started({
      dir,
      config: configToml({
        server: { listen: "127.0.0.1:0", socket: "", dataDir: dir },
        pools: [{ name: "x", cidr: "10.0.0.0/24" }],
      }),
      args: ["-n", "192.168.1", "-g", "192.168.1.254"],
    });
    const { body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "orig" });
    expect(body).toMatchObject({ ip: "192.168.1.1", gateway: "192.168.1.254", network: "192.168.1.0/24" });
  });
});
