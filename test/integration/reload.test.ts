/**
 * SIGHUP reloads the config file under the running daemon: what can change without a restart
 * changes at once, what cannot is named in a warning and keeps its running value, and a file
 * that does not load changes nothing. Hosts are an SSH server in this test process.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConfigSpec, configToml, type HostSpec } from "../support/config-toml.ts";
import { Daemon, tempDir } from "../support/daemon.ts";
import { eventually } from "../support/processes.ts";
import { SshTestServer } from "../support/ssh-server.ts";

const ACME_KEY = "acme-0f3a9c1e5b7d2468";
const ACME_NEW_KEY = "acme-new-6e2b8d4f0a1c3579";
const GLOBEX_KEY = "globex-5d1e7f3b9a2c4680";

let daemon: Daemon | undefined;
const servers: SshTestServer[] = [];
afterEach(async () => {
  await daemon?.dispose();
  daemon = undefined;
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

/** The config file of a daemon in `dir`: its server section, then `spec`. */
function fileFor(dir: string, spec: ConfigSpec): string {
  return configToml({
    server: { listen: "127.0.0.1:0", socket: join(dir, "ippool.sock"), dataDir: dir },
    pools: [{ name: "vms", cidr: "10.30.0.0/24" }],
    eipPools: { public: "100.64.7.0/24" },
    ...spec,
  });
}

async function startWith(spec: ConfigSpec): Promise<Daemon> {
  const dir = tempDir();
  daemon = await Daemon.start({ dir, config: fileFor(dir, spec) });
  return daemon;
}

/**
 * Rewrites the daemon's config file, sends SIGHUP and resolves with the reload's log lines (request
 * lines are left out: one for an earlier answer may still be on its way through the pipe).
 */
async function reload(running: Daemon, spec: ConfigSpec): Promise<string[]> {
  const before = running.logs.length;
  writeFileSync(running.configPath, fileFor(running.dir, spec));
  running.proc.kill("SIGHUP");
  const done = /\b(reloaded|reload refused|reload failed)\b/;
  if (!(await eventually(async () => done.test(running.logs.slice(before)), 10_000, 10))) {
    throw new Error(`no reload logged:\n${running.logs.slice(before)}`);
  }
  return running.logs
    .slice(before)
    .trim()
    .split("\n")
    .filter((line) => !/ INFO request /.test(line));
}

function eipList(running: Daemon, key: string) {
  return running.json("/elastic-ips", { headers: { "x-api-key": key } });
}

async function sshHost(name: string): Promise<{ server: SshTestServer; spec: HostSpec }> {
  // Every command succeeds with no output: enough for a host to count as connected.
  const server = await SshTestServer.start(() => ({ code: 0 }));
  servers.push(server);
  const keyPath = join(tempDir("ippool-key-"), "id_ed25519");
  writeFileSync(keyPath, server.clientKey, { mode: 0o600 });
  return {
    server,
    spec: {
      name,
      address: "127.0.0.1",
      port: server.port,
      user: "root",
      privateKeyPath: keyPath,
      hostKey: server.hostKey,
      publicInterface: "eth0",
    },
  };
}

describe("SIGHUP", () => {
  test("a new key works at once, a removed one is refused, and the log says what was applied", async () => {
    const running = await startWith({ projects: [{ name: "acme", apiKey: ACME_KEY }] });
    expect((await eipList(running, ACME_KEY)).status).toBe(200);
    const lines = await reload(running, {
      projects: [
        { name: "acme", apiKey: ACME_NEW_KEY },
        { name: "globex", apiKey: GLOBEX_KEY },
      ],
    });
    expect(lines).toEqual([expect.stringMatching(/ INFO reloaded applied=projects$/)]);
    expect((await eipList(running, ACME_KEY)).status).toBe(401);
    expect((await eipList(running, ACME_NEW_KEY)).status).toBe(200);
    expect((await eipList(running, GLOBEX_KEY)).status).toBe(200);
  });

  test("a new admin key guards the pool API at once; the old one is refused", async () => {
    const dir = tempDir();
    const server = (adminKey: string) => ({
      listen: "0.0.0.0:0",
      socket: join(dir, "ippool.sock"),
      dataDir: dir,
      adminKey,
    });
    daemon = await Daemon.start({ dir, config: fileFor(dir, { server: server("admin-old-1c5e") }) });
    const stats = (key: string) => daemon?.json("/api/v1/ip/stats", { headers: { "x-api-key": key } });
    expect((await stats("admin-old-1c5e"))?.status).toBe(200);
    const lines = await reload(daemon, { server: server("admin-new-7a2d") });
    expect(lines).toEqual([expect.stringMatching(/ INFO reloaded applied="admin key"$/)]);
    expect((await stats("admin-old-1c5e"))?.status).toBe(401);
    expect((await stats("admin-new-7a2d"))?.status).toBe(200);
  });

  test("what needs a restart is named, keeps its running value, and the rest is applied", async () => {
    const running = await startWith({});
    await running.post("/api/v1/ip/allocate", { vm_id: "vm-1" });
    const lines = await reload(running, {
      pools: [{ name: "other", cidr: "10.99.0.0/24" }],
      leaks: { gracePeriodS: 60 },
    });
    expect(lines).toEqual([
      expect.stringMatching(/ WARN reload: needs a restart, not applied key=pools$/),
      expect.stringMatching(/ INFO reloaded applied=leaks$/),
    ]);
    expect((await running.json("/api/v1/ip/vm-1")).body.ip).toBe("10.30.0.2");
    expect((await running.post("/api/v1/ip/allocate", { vm_id: "vm-2" })).body.ip).toBe("10.30.0.3");
  });

  test("a file that does not load changes nothing, and the daemon keeps serving", async () => {
    const running = await startWith({ projects: [{ name: "acme", apiKey: ACME_KEY }] });
    const before = running.logs.length;
    writeFileSync(running.configPath, '[[pools]]\nname = "broken\n');
    running.proc.kill("SIGHUP");
    await running.waitForLog("reload refused");
    expect(running.logs.slice(before)).toContain(
      `ERROR reload refused: the config file does not load; nothing changed error="${running.configPath}:`,
    );
    expect((await eipList(running, ACME_KEY)).status).toBe(200);
  });

  test("log settings: request lines carry debug detail after a reload to debug", async () => {
    const running = await startWith({});
    await running.json("/api/v1/health");
    await running.waitForLog(/ INFO request method=GET path=\/api\/v1\/health status=200 ms=[\d.]+\n/);
    expect(running.logs).not.toContain("via=tcp");
    const file = fileFor(running.dir, {}).replace("[server]\n", '[server]\nlog_level = "debug"\n');
    writeFileSync(running.configPath, file);
    running.proc.kill("SIGHUP");
    await running.waitForLog("reloaded applied=log");
    await running.json("/api/v1/health");
    await running.waitForLog(/ INFO request method=GET path=\/api\/v1\/health status=200 ms=[\d.]+ via=tcp/);
  });

  test("a host added to the file is connected, one removed is dropped", async () => {
    const first = await sshHost("hv1");
    const second = await sshHost("hv2");
    const running = await startWith({ hosts: [first.spec] });
    await first.server.until(() => first.server.authenticated === 1, "hv1 connected");
    const lines = await reload(running, { hosts: [second.spec] });
    expect(lines).toContainEqual(expect.stringMatching(/ INFO reloaded applied=hosts\(\+hv2,-hv1\)$/));
    await second.server.until(() => second.server.authenticated === 1, "hv2 connected");
    const up = async () => (await (await running.fetch("/metrics")).text()).match(/^ippool_host_up\{.*$/gm) ?? [];
    expect(await eventually(async () => (await up()).join() === 'ippool_host_up{host="hv2"} 1', 5000, 20)).toBe(true);
  });

  test("SIGHUP does not stop the daemon: SIGTERM afterwards still stops it cleanly", async () => {
    const running = await startWith({});
    await reload(running, {});
    expect(running.logs).toMatch(/ INFO reloaded applied="nothing changed"\n/);
    expect((await running.json("/api/v1/health")).status).toBe(200);
    expect(await running.stop()).toBe(0);
  });
});
