/** HostRegistry.update (a reload): which hosts are kept, reconnected, added and closed. */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { HostDefinition } from "../../../src/config/config.ts";
import { HostConfigError } from "../../../src/hosts/errors.ts";
import { HostRegistry } from "../../../src/hosts/registry.ts";
import { SshTestServer } from "../../support/ssh-server.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function server(): Promise<SshTestServer> {
  const started = await SshTestServer.start(() => ({ code: 0 }));
  cleanups.push(() => started.stop());
  return started;
}

function keyFile(content: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), "ippool-registry-test-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "id_ed25519");
  writeFileSync(path, content, { mode: 0o600 });
  return path;
}

function definition(name: string, host: SshTestServer, privateKeyPath = keyFile(host.clientKey)): HostDefinition {
  return {
    name,
    address: "127.0.0.1",
    port: host.port,
    user: "root",
    privateKeyPath,
    hostKey: host.hostKey,
    libvirtUri: "qemu:///system",
    publicInterface: "eth0",
    sudo: false,
    connectTimeoutMs: 2000,
    commandTimeoutMs: 2000,
  };
}

function registryOf(definitions: HostDefinition[]): HostRegistry {
  const registry = new HostRegistry(definitions, { tuning: { backoffInitialMs: 10, backoffMaxMs: 50 } });
  cleanups.push(() => registry.close());
  registry.start();
  return registry;
}

describe("HostRegistry.update", () => {
  test("the same definitions and key files change nothing: the connection is kept", async () => {
    const hv1 = await server();
    const defined = definition("hv1", hv1);
    const registry = registryOf([defined]);
    const before = registry.get("hv1");
    await before?.connection.waitConnected(5000);
    expect(await registry.update([defined])).toEqual({ added: [], changed: [], removed: [] });
    expect(registry.get("hv1")).toBe(before as NonNullable<typeof before>);
    expect(hv1.authenticated).toBe(1);
  });

  test("a host whose settings changed is reconnected; added hosts connect, removed ones close", async () => {
    const [hv1, moved, hv2, hv3] = await Promise.all([server(), server(), server(), server()]);
    const registry = registryOf([definition("hv1", hv1), definition("hv2", hv2)]);
    const old = registry.get("hv1");
    const gone = registry.get("hv2");
    await Promise.all([old?.connection.waitConnected(5000), gone?.connection.waitConnected(5000)]);
    const changes = await registry.update([definition("hv1", moved), definition("hv3", hv3)]);
    expect(changes).toEqual({ added: ["hv3"], changed: ["hv1"], removed: ["hv2"] });
    expect(registry.all().map((host) => host.name)).toEqual(["hv1", "hv3"]);
    expect(old?.connected).toBe(false);
    expect(gone?.connected).toBe(false);
    await registry.get("hv1")?.connection.waitConnected(5000);
    await registry.get("hv3")?.connection.waitConnected(5000);
    expect(moved.authenticated).toBe(1);
  });

  test("connect listeners hear hosts added by an update", async () => {
    const [hv1, hv2] = await Promise.all([server(), server()]);
    const kept = definition("hv1", hv1);
    const registry = registryOf([kept]);
    const heard: string[] = [];
    const hv2Heard = new Promise<void>((resolve) =>
      registry.onConnect((host) => {
        heard.push(host.name);
        if (host.name === "hv2") resolve();
      }),
    );
    await registry.get("hv1")?.connection.waitConnected(5000);
    await registry.update([kept, definition("hv2", hv2)]);
    await hv2Heard;
    expect(heard).toEqual(["hv1", "hv2"]);
  });

  test("a key file that does not check out refuses the whole update and keeps the hosts", async () => {
    const [hv1, hv2] = await Promise.all([server(), server()]);
    const registry = registryOf([definition("hv1", hv1)]);
    const before = registry.get("hv1");
    const openKey = keyFile(hv2.clientKey);
    rmSync(openKey);
    let error: unknown;
    try {
      await registry.update([definition("hv1", hv1), definition("hv2", hv2, openKey)]);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(HostConfigError);
    expect((error as Error).message).toBe(`hosts[1].private_key: ${openKey} does not exist`);
    expect(registry.all()).toEqual([before as NonNullable<typeof before>]);
  });
});
