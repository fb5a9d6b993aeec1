/**
 * DHCP reservations in fleet mode: two daemons (hv1 and hv2) on one PostgreSQL database, each
 * with its own reservation directory, as each host has its own dnsmasq. A reservation is a file
 * for the dnsmasq beside the VM, so only the daemon of the host an allocation names writes it,
 * removes it, or brings it back: at once when it answers the request, and at its start and every
 * reconciliation interval (here 1 s) when another daemon did. An allocation naming no host names
 * no dnsmasq and gets no reservation (the hook always names its host). A looping shell stands in
 * for dnsmasq.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { configToml } from "../support/config-toml.ts";
import { Daemon, tempDir } from "../support/daemon.ts";
import { type DaemonStore, daemonStore } from "../support/daemon-store.ts";
import { eventually } from "../support/processes.ts";

const HOSTS = ["hv1", "hv2"] as const;
let dir: string;
let store: DaemonStore;
const standIns: Subprocess[] = [];
const daemons = new Map<string, Daemon>();

function config(host: string): string {
  const runDir = join(dir, host, "libvirt-run");
  return (
    configToml({
      reconcileIntervalS: 1,
      pools: [{ name: "vms", cidr: "10.77.0.0/24", gateway: "10.77.0.1", networks: ["vmnet"] }],
      dhcp: { dir: join(dir, host, "dhcp"), libvirtRunDir: runDir, libvirtLeaseDir: runDir },
    }) + store.tomlFor(host)
  );
}

/** A host's libvirt network `vmnet` with a stand-in for its dnsmasq (its pid where libvirt keeps it). */
function prepareHost(host: string): void {
  const runDir = join(dir, host, "libvirt-run");
  mkdirSync(runDir, { recursive: true });
  mkdirSync(join(dir, host, "daemon"));
  const proc = Bun.spawn(["bash", "-c", "trap : HUP; while :; do sleep 0.05; done"], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  standIns.push(proc);
  writeFileSync(join(runDir, "vmnet.pid"), `${proc.pid}\n`);
  writeFileSync(
    join(runDir, "vmnet.xml"),
    "<networkstatus><network><name>vmnet</name><bridge name='virbr9' stp='on'/></network></networkstatus>\n",
  );
}

const startDaemon = (host: string) => Daemon.start({ dir: join(dir, host, "daemon"), config: config(host) });
const reserved = (host: string) => readdirSync(join(dir, host, "dhcp", "network", "vmnet")).sort();
const daemon = (host: string) => daemons.get(host) as Daemon;
const release = (through: string, vmId: string) =>
  daemon(through).json(`/api/v1/ip/release/${vmId}`, { method: "DELETE" });
const allocate = (through: string, vmId: string, mac: string, host?: string) =>
  daemon(through).post("/api/v1/ip/allocate", {
    vm_id: vmId,
    interfaces: [{ mac, network: "vmnet" }],
    ...(host === undefined ? {} : { host }),
  });

beforeAll(async () => {
  dir = tempDir("ippool-dhcp-fleet-");
  store = await daemonStore("postgres");
  for (const host of HOSTS) {
    prepareHost(host);
    daemons.set(host, await startDaemon(host));
  }
});

afterAll(async () => {
  for (const d of daemons.values()) await d.dispose();
  for (const proc of standIns) proc.kill("SIGKILL");
  await store?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("DHCP reservations with a daemon on every host", () => {
  test("a VM's reservation is written only on the host its allocation names, whichever daemon answers", async () => {
    expect((await allocate("hv1", "vm-on-1", "52:54:00:00:01:01", "hv1")).status).toBe(201);
    expect((await allocate("hv2", "vm-on-2", "52:54:00:00:02:02", "hv2")).status).toBe(201);
    expect(reserved("hv1")).toEqual(["52-54-00-00-01-01"]);
    expect(reserved("hv2")).toEqual(["52-54-00-00-02-02"]);
    // A VM of hv2 allocated through hv1's TCP API: hv2's daemon writes it at its next interval.
    expect((await allocate("hv1", "vm-also-on-2", "52:54:00:00:02:03", "hv2")).status).toBe(201);
    const both = ["52-54-00-00-02-02", "52-54-00-00-02-03"];
    expect(await eventually(async () => JSON.stringify(reserved("hv2")) === JSON.stringify(both), 5000)).toBe(true);
    expect(reserved("hv1")).toEqual(["52-54-00-00-01-01"]);
  });

  test("an allocation naming no host gets no reservation on any host", async () => {
    expect((await allocate("hv2", "vm-anywhere", "52:54:00:00:09:09")).status).toBe(201);
    expect(reserved("hv2")).toEqual(["52-54-00-00-02-02", "52-54-00-00-02-03"]);
    expect(reserved("hv1")).toEqual(["52-54-00-00-01-01"]);
  });

  test("at its start a daemon writes the reservations of its own host's VMs, and no other host's", async () => {
    expect(await daemon("hv2").stop()).toBe(0);
    rmSync(join(dir, "hv2", "dhcp"), { recursive: true, force: true });
    daemons.set("hv2", await startDaemon("hv2"));
    expect(reserved("hv2")).toEqual(["52-54-00-00-02-02", "52-54-00-00-02-03"]);
    expect(await daemon("hv1").stop()).toBe(0);
    rmSync(join(dir, "hv1", "dhcp"), { recursive: true, force: true });
    daemons.set("hv1", await startDaemon("hv1"));
    expect(reserved("hv1")).toEqual(["52-54-00-00-01-01"]);
  });

  test("a release through another host's daemon: the VM's host's daemon withdraws its reservation at its next interval", async () => {
    expect((await release("hv1", "vm-on-2")).status).toBe(200);
    expect(reserved("hv1")).toEqual(["52-54-00-00-01-01"]);
    const left = async () => JSON.stringify(reserved("hv2")) === JSON.stringify(["52-54-00-00-02-03"]);
    expect(await eventually(left, 5000)).toBe(true);
    // Released through hv2 itself: gone at once.
    expect((await release("hv2", "vm-also-on-2")).status).toBe(200);
    expect(reserved("hv2")).toEqual([]);
  });
});
