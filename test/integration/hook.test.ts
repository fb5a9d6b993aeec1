/** hooks/qemu invoked exactly as libvirt invokes it: arguments, and the domain XML on stdin. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
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
let dir: string;
/** Where the hook looks for persistent domains' config files (libvirt's /etc/libvirt/qemu). */
let configDir: string;
beforeAll(async () => {
  daemon = await Daemon.start();
  dir = tempDir("ippool-hook-");
  configDir = join(dir, "qemu");
  mkdirSync(configDir);
});
afterAll(async () => {
  await daemon.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Makes `name` a persistent domain, as `virsh define` does. */
function define(name: string): void {
  writeFileSync(join(configDir, `${name}.xml`), domainXml(name));
}

async function hook(args: string[], xml: string, env: Record<string, string | undefined> = {}) {
  const started = performance.now();
  const merged: Record<string, string | undefined> = {
    PATH: process.env.PATH ?? "",
    IPPOOL_BIN: BINARY,
    IPPOOL_SOCKET: daemon.socket,
    IPPOOL_HOST: "hv7",
    IPPOOL_HOOK_LOG: "stderr",
    IPPOOL_HOOK_ENV: "/nonexistent",
    IPPOOL_LIBVIRT_CONFIG_DIR: configDir,
    ...env,
  };
  const proc = Bun.spawn(["bash", HOOK, ...args], {
    stdin: new Blob([xml]),
    stdout: "pipe",
    stderr: "pipe",
    env: Object.fromEntries(Object.entries(merged).filter(([, value]) => value !== undefined)) as Record<
      string,
      string
    >,
  });
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  return { code, stderr, ms: performance.now() - started };
}

describe("the libvirt hook", () => {
  test("prepare begin allocates with the UUID as vm_id, the domain name as its name and hostname, and this host", async () => {
    define("web-1");
    const result = await hook(["web-1", "prepare", "begin", "-"], domainXml("web-1"));
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("allocate: ok");
    const { body } = await daemon.json(`/api/v1/ip/${UUID}`);
    expect(body).toMatchObject({ vm_id: UUID, name: "web-1", hostname: "web-1", host: "hv7" });
  });

  test("the VM is found by its name as by its UUID: one VM, one allocation", async () => {
    const byName = await daemon.json("/api/v1/ip/web-1");
    const byUuid = await daemon.json(`/api/v1/ip/${UUID}`);
    expect(byName.status).toBe(200);
    expect(byName.body).toEqual(byUuid.body);
    const list = (await daemon.json("/api/v1/ip/allocations")).body as { vm_id: string }[];
    expect(list.filter((allocation) => allocation.vm_id === UUID)).toHaveLength(1);
  });

  test("operations other than prepare, reconnect and release do nothing", async () => {
    for (const args of [
      ["web-1", "start", "begin", "-"],
      ["web-1", "started", "begin", "-"],
      ["web-1", "stopped", "end", "-"],
      ["web-1", "restore", "begin", "-"],
    ]) {
      expect((await hook(args, domainXml("web-1", "00000000-0000-4000-8000-00000000000a"))).code).toBe(0);
    }
    expect((await daemon.json("/api/v1/ip/00000000-0000-4000-8000-00000000000a")).status).toBe(404);
  });

  test("a persistent domain that stops (or is saved) keeps its address, and the next start gets the same one", async () => {
    const before = (await daemon.json(`/api/v1/ip/${UUID}`)).body as { ip: string };
    const stopped = await hook(["web-1", "release", "end", "-"], domainXml("web-1"));
    expect(stopped.code).toBe(0);
    expect(stopped.stderr).toContain("keeps its address");
    expect(await hook(["web-1", "prepare", "begin", "-"], domainXml("web-1"))).toMatchObject({ code: 0 });
    expect(((await daemon.json(`/api/v1/ip/${UUID}`)).body as { ip: string }).ip).toBe(before.ip);
  });

  test("reconnect begin records a VM that was running before the hook was installed", async () => {
    const uuid = "2b0f7d0e-7a51-4f6a-9d53-1c0ffee00001";
    expect((await hook(["old-vm", "reconnect", "begin", "-"], domainXml("old-vm", uuid))).code).toBe(0);
    expect((await daemon.json("/api/v1/ip/old-vm")).body).toMatchObject({ vm_id: uuid, host: "hv7" });
  });

  test("a live migration's order (destination prepare, then source release) keeps the address on the destination", async () => {
    const uuid = "2b0f7d0e-7a51-4f6a-9d53-1c0ffee00002";
    // The source's copy was undefined by the migration (--undefinesource): it looks transient there.
    expect((await hook(["mover", "prepare", "begin", "-"], domainXml("mover", uuid))).code).toBe(0);
    const before = (await daemon.json(`/api/v1/ip/${uuid}`)).body as { ip: string };
    expect(
      (await hook(["mover", "prepare", "begin", "-"], domainXml("mover", uuid), { IPPOOL_HOST: "hv8" })).code,
    ).toBe(0);
    const released = await hook(["mover", "release", "end", "-"], domainXml("mover", uuid));
    expect(released.code).toBe(0);
    expect(released.stderr).toContain("runs on another host now");
    expect((await daemon.json(`/api/v1/ip/${uuid}`)).body).toMatchObject({ ip: before.ip, host: "hv8" });
  });

  test("a transient domain's address is released when it stops; releasing it again is not an error", async () => {
    const uuid = "2b0f7d0e-7a51-4f6a-9d53-1c0ffee00003";
    expect((await hook(["temp", "prepare", "begin", "-"], domainXml("temp", uuid))).code).toBe(0);
    const result = await hook(["temp", "release", "end", "-"], domainXml("temp", uuid));
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("release: ok");
    expect((await daemon.json(`/api/v1/ip/${uuid}`)).status).toBe(404);
    const again = await hook(["temp", "release", "end", "-"], domainXml("temp", uuid));
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("nothing was allocated");
  });

  test("a domain name that is not a host name is recorded as the VM's name but not as its hostname", async () => {
    const uuid = "11111111-2222-4333-8444-555555555555";
    expect((await hook(["my_vm", "prepare", "begin", "-"], domainXml("my_vm", uuid))).code).toBe(0);
    const { body } = await daemon.json("/api/v1/ip/my_vm");
    expect(body).toMatchObject({ vm_id: uuid, name: "my_vm" });
    expect(body.hostname).toBeUndefined();
  });

  test("hook.env settings reach the client: a socket named there is the one used", async () => {
    const envFile = join(dir, "hook.env");
    writeFileSync(envFile, "IPPOOL_SOCKET=/nonexistent/ippool.sock\nIPPOOL_HOOK_REQUIRED=1\nIPPOOL_HOST=hv9\n");
    const uuid = "2b0f7d0e-7a51-4f6a-9d53-1c0ffee00004";
    const refused = await hook(["envvm", "prepare", "begin", "-"], domainXml("envvm", uuid), {
      IPPOOL_HOOK_ENV: envFile,
    });
    expect(refused.code).toBe(1);
    expect((await daemon.json(`/api/v1/ip/${uuid}`)).status).toBe(404);
    writeFileSync(envFile, `IPPOOL_SOCKET=${daemon.socket}\nIPPOOL_HOST=hv9\n`);
    const allocated = await hook(["envvm", "prepare", "begin", "-"], domainXml("envvm", uuid), {
      IPPOOL_HOOK_ENV: envFile,
      IPPOOL_SOCKET: "/nonexistent/other.sock",
      IPPOOL_HOST: undefined,
    });
    expect(allocated.code).toBe(0);
    expect((await daemon.json(`/api/v1/ip/${uuid}`)).body).toMatchObject({ host: "hv9" });
  });

  test("a daemon that does not answer holds the VM start no longer than the timeout, then lets it start", async () => {
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
    }
  });
});
