/**
 * The container image's configuration (docs/ippool.container.toml, named by IPPOOL_CONFIG in the
 * Dockerfile) run by the compiled daemon with the arguments of the original README's `docker run`
 * lines, as the image would receive them. `make image-test` runs the lines themselves in podman;
 * this pins, without root or a container, what they rely on.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Daemon, runToExit, tempDir } from "../support/daemon.ts";

const IMAGE_CONFIG = readFileSync(join(import.meta.dir, "../../docs/ippool.container.toml"), "utf8");

/** The image's file with its socket and data directory moved into `dir`; everything else as shipped. */
function imageConfig(dir: string): string {
  return IMAGE_CONFIG.replaceAll("/run/ippool/ippool.sock", join(dir, "ippool.sock")).replaceAll(
    "/var/lib/ippool",
    dir,
  );
}

let daemon: Daemon | undefined;
afterEach(async () => {
  await daemon?.dispose();
  daemon = undefined;
});

async function startImage(args: readonly string[], env: Record<string, string> = {}): Promise<Daemon> {
  const dir = tempDir();
  daemon = await Daemon.start({ dir, config: imageConfig(dir), configFromEnv: true, args, env });
  return daemon;
}

describe("the image's config file with the original's docker run arguments", () => {
  test("no arguments: 0.0.0.0 with the original's default pool, the pool API open without a key", async () => {
    // `-p 8080:8080 ippool:latest` with port 0 for 8080: a test may not take a fixed port.
    const started = await startImage(["--port", "0"]);
    expect(started.logs).toMatch(/listening tcp=0\.0\.0\.0:\d+/);
    const allocated = await started.post("/api/v1/ip/allocate", { vm_id: "vm-1" });
    expect(allocated).toEqual({
      status: 201,
      body: expect.objectContaining({ ip: "172.16.0.2", gateway: "172.16.0.1", network: "172.16.0.0/24" }),
    });
  });

  test("--port --network --gateway keep the image's listener host, socket and data directory", async () => {
    const started = await startImage(["--port", "0", "--network", "192.168.1", "--gateway", "192.168.1.1"]);
    expect(started.logs).toMatch(/listening tcp=0\.0\.0\.0:\d+/);
    expect(started.logs).toContain(`listening socket=${started.socket}`);
    const body = { vm_id: "srv-abc123", hostname: "my-vm" };
    expect((await started.post("/api/v1/ip/allocate", body)).body).toMatchObject({
      ip: "192.168.1.2",
      gateway: "192.168.1.1",
      network: "192.168.1.0/24",
    });
    const stats = await started.json("/api/v1/ip/stats");
    expect(stats).toEqual({ status: 200, body: expect.objectContaining({ total: 253, allocated: 1 }) });
    // The store is in the file's data directory: `fsck` with the same file and flags finds the allocation.
    expect(await started.stop()).toBe(0);
    const check = await runToExit(["fsck", "--network", "192.168.1", "--gateway", "192.168.1.1"], {
      IPPOOL_CONFIG: started.configPath,
    });
    expect(check.stdout).toContain("default: 1 allocations, 0 problems\n");
    expect(check.code).toBe(0);
  });

  test("the open pool API is said at start as a warning naming the setting", async () => {
    const started = await startImage(["--port", "0"]);
    const warning = started.logs.split("\n").find((line) => line.includes("pool API open"));
    expect(warning).toMatch(/^\S+ WARN pool API open listen=0\.0\.0\.0:0 /);
    expect(warning).toContain("server.open_pool_api = true");
  });

  test("without open_pool_api the same listener refuses the pool API without the admin key", async () => {
    const dir = tempDir();
    const closed = imageConfig(dir).replace("open_pool_api = true", "");
    daemon = await Daemon.start({ dir, config: closed, configFromEnv: true, args: ["--port", "0"] });
    const refused = await daemon.post("/api/v1/ip/allocate", { vm_id: "vm-1" });
    expect(refused).toEqual({ status: 401, body: expect.objectContaining({ code: "UNAUTHORIZED" }) });
    expect(daemon.logs).not.toContain("pool API open");
  });

  test("RUST_LOG=debug, as `docker run -e RUST_LOG=debug` passes it, turns on debug lines", async () => {
    const quiet = await startImage(["--port", "0"]);
    expect(quiet.logs).not.toContain(" DEBUG ");
    await quiet.dispose();
    const verbose = await startImage(["--port", "0"], { RUST_LOG: "debug" });
    expect(verbose.logs).toMatch(/ DEBUG configuration /);
  });
});

describe("where the config file comes from", () => {
  test("--config wins over IPPOOL_CONFIG", async () => {
    daemon = await Daemon.start({ env: { IPPOOL_CONFIG: "/nonexistent/ippool.toml" } });
    expect((await daemon.json("/api/v1/health")).status).toBe(200);
  });

  test("an IPPOOL_CONFIG that does not exist stops the start with exit 2, naming the path", async () => {
    const result = await runToExit([], { IPPOOL_CONFIG: "/nonexistent/ippool.toml" });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("/nonexistent/ippool.toml");
  });

  test("a RUST_LOG level ippool cannot read stops the start with exit 2, naming RUST_LOG", async () => {
    const result = await runToExit(["--listen", "127.0.0.1:0", "--socket", ""], { RUST_LOG: "ippool=verbose" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n")).toEqual([
      'ippool: RUST_LOG="ippool=verbose": "verbose" is not a level (trace, debug, info, warn, error, off)',
    ]);
  });
});
