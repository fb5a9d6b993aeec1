/** hooks/qemu invoked exactly as libvirt invokes it: arguments, and the domain XML on stdin. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join, resolve } from "node:path";
import { BINARY, Daemon, tempDir } from "../support/daemon.ts";

const HOOK = resolve(import.meta.dir, "../../hooks/qemu");
const UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0";
const domainXml = (name: string, uuid = UUID) => `<domain type='kvm'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='KiB'>1048576</memory>
  <devices>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/></interface>
  </devices>
</domain>
`;

let daemon: Daemon;
beforeAll(async () => {
  daemon = await Daemon.start();
});
afterAll(async () => {
  await daemon.dispose();
});

async function hook(args: string[], xml: string, env: Record<string, string> = {}) {
  const started = performance.now();
  const proc = Bun.spawn(["bash", HOOK, ...args], {
    stdin: new Blob([xml]),
    stdout: "pipe",
    stderr: "pipe",
    env: {
      PATH: process.env.PATH ?? "",
      IPPOOL_BIN: BINARY,
      IPPOOL_SOCKET: daemon.socket,
      IPPOOL_HOST: "hv7",
      IPPOOL_HOOK_LOG: "stderr",
      IPPOOL_HOOK_ENV: "/nonexistent",
      ...env,
    },
  });
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  return { code, stderr, ms: performance.now() - started };
}

describe("the libvirt hook", () => {
  test("prepare begin allocates with the UUID as vm_id, the name as hostname and this host", async () => {
    const result = await hook(["web-1", "prepare", "begin", "-"], domainXml("web-1"));
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("allocate: ok");
    const { body } = await daemon.json(`/api/v1/ip/${UUID}`);
    expect(body).toMatchObject({ vm_id: UUID, hostname: "web-1", host: "hv7" });
  });

  test("operations other than prepare/begin and release/end do nothing", async () => {
    for (const args of [
      ["web-1", "start", "begin", "-"],
      ["web-1", "started", "begin", "-"],
      ["web-1", "stopped", "end", "-"],
    ]) {
      expect((await hook(args, domainXml("web-1", "00000000-0000-4000-8000-00000000000a"))).code).toBe(0);
    }
    expect((await daemon.json("/api/v1/ip/00000000-0000-4000-8000-00000000000a")).status).toBe(404);
  });

  test("release end releases the VM's address; releasing it again is not an error", async () => {
    const result = await hook(["web-1", "release", "end", "-"], domainXml("web-1"));
    expect(result.code).toBe(0);
    expect((await daemon.json(`/api/v1/ip/${UUID}`)).status).toBe(404);
    const again = await hook(["web-1", "release", "end", "-"], domainXml("web-1"));
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("nothing was allocated");
  });

  test("a domain name that is not a host name is allocated without one", async () => {
    const uuid = "11111111-2222-4333-8444-555555555555";
    expect((await hook(["my_vm", "prepare", "begin", "-"], domainXml("my_vm", uuid))).code).toBe(0);
    const { body } = await daemon.json(`/api/v1/ip/${uuid}`);
    expect(body.hostname).toBeUndefined();
  });

  test("a daemon that does not answer holds the VM start no longer than the timeout, then lets it start", async () => {
    const dir = tempDir("ippool-hook-");
    const silent: Server = createServer(() => {});
    const socket = join(dir, "silent.sock");
    await new Promise<void>((done) => silent.listen(socket, done));
    try {
      const result = await hook(["web-2", "prepare", "begin", "-"], domainXml("web-2"), {
        IPPOOL_SOCKET: socket,
        IPPOOL_HOOK_TIMEOUT: "1",
      });
      expect(result.code).toBe(0);
      expect(result.ms).toBeLessThan(5000);
      expect(result.stderr).toContain("no answer within 1s");
      const required = await hook(["web-2", "prepare", "begin", "-"], domainXml("web-2"), {
        IPPOOL_SOCKET: socket,
        IPPOOL_HOOK_TIMEOUT: "1",
        IPPOOL_HOOK_REQUIRED: "1",
      });
      expect(required.code).toBe(1);
    } finally {
      silent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
