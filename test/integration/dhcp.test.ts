/**
 * DHCP reservation files through the binary: what dnsmasq would read (`dhcp-hostsdir`), written
 * before the allocate is answered and taken back (with a SIGHUP to dnsmasq) on release. A real
 * dnsmasq and real guests are in test/hosts/real-libvirt.test.ts; here a process that records
 * its SIGHUPs stands in for dnsmasq, to check the files and the signals exactly.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { configToml } from "../support/config-toml.ts";
import { Daemon, tempDir } from "../support/daemon.ts";
import { eventually } from "../support/processes.ts";

let dir: string;
let daemon: Daemon;
let dnsmasq: Subprocess;
const hups = () => (existsSync(join(dir, "hups")) ? readFileSync(join(dir, "hups"), "utf8").split("\n").length - 1 : 0);

/** A stand-in for libvirt's dnsmasq: its pid where libvirt keeps it; it counts the SIGHUPs it gets. */
async function startDnsmasqStandIn(runDir: string): Promise<Subprocess> {
  const proc = Bun.spawn(["bash", "-c", `trap 'echo hup >> ${join(dir, "hups")}' HUP; while :; do sleep 0.05; done`], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  writeFileSync(join(runDir, "vmnet.pid"), `${proc.pid}\n`);
  writeFileSync(
    join(runDir, "vmnet.xml"),
    "<networkstatus><network><name>vmnet</name><bridge name='virbr9' stp='on'/></network></networkstatus>\n",
  );
  return proc;
}

beforeAll(async () => {
  dir = tempDir("ippool-dhcp-");
  const runDir = join(dir, "libvirt-run");
  mkdirSync(runDir);
  dnsmasq = await startDnsmasqStandIn(runDir);
  // A reservation left by a crash between a release's commit and its file: removed at start.
  mkdirSync(join(dir, "dhcp/network/vmnet"), { recursive: true });
  writeFileSync(join(dir, "dhcp/network/vmnet/52-54-00-00-00-99"), "52:54:00:00:00:99,10.77.0.50,ghost\n");
  mkdirSync(join(dir, "daemon"));
  daemon = await Daemon.start({
    dir: join(dir, "daemon"),
    config: configToml({
      pools: [
        { name: "vms", cidr: "10.77.0.0/24", gateway: "10.77.0.1", networks: ["vmnet"], bridges: ["br-ops"] },
        { name: "other", cidr: "10.78.0.0/24", gateway: "10.78.0.1" },
      ],
      dhcp: { dir: join(dir, "dhcp"), libvirtRunDir: runDir, libvirtLeaseDir: runDir },
    }),
  });
});

afterAll(async () => {
  await daemon.dispose();
  dnsmasq.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

const files = (link: string) => readdirSync(join(dir, "dhcp", link)).sort();
const file = (link: string, name: string) => readFileSync(join(dir, "dhcp", link, name), "utf8");

describe("DHCP reservations", () => {
  test("at start, a reservation no allocation has is removed and dnsmasq is told", async () => {
    expect(files("network/vmnet")).toEqual([]);
    expect(await eventually(async () => hups() === 1, 5000)).toBe(true);
  });

  test("an allocate with the VM's NICs picks the pool serving their network and reserves the first NIC there", async () => {
    const { status, body } = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "0d6f2a8e-1111-4222-8333-444455556666",
      name: "Web_Server ñ1",
      interfaces: [
        { mac: "52:54:00:AA:00:01", bridge: "br-unknown" },
        { mac: "52:54:00:AA:00:02", network: "vmnet" },
      ],
    });
    expect(status).toBe(201);
    expect(body).toMatchObject({
      pool: "vms",
      name: "Web_Server ñ1",
      interface: { mac: "52:54:00:aa:00:02", network: "vmnet" },
    });
    // Written before the answer: a guest started after the hook returns gets this address.
    expect(files("network/vmnet")).toEqual(["52-54-00-aa-00-02"]);
    expect(file("network/vmnet", "52-54-00-aa-00-02")).toBe(`52:54:00:aa:00:02,${body.ip},web-server-n1\n`);
  });

  test("a repeat allocate keeps the address and the reservation", async () => {
    const { status, body } = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "0d6f2a8e-1111-4222-8333-444455556666",
      interfaces: [{ mac: "52:54:00:aa:00:02", network: "vmnet" }],
    });
    expect(status).toBe(201);
    expect(file("network/vmnet", "52-54-00-aa-00-02")).toBe(`52:54:00:aa:00:02,${body.ip},web-server-n1\n`);
  });

  test("a NIC on a bridge the pool serves gets its reservation in the bridge's directory", async () => {
    const { body } = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "bridged-1",
      interfaces: [{ mac: "52:54:00:bb:00:01", bridge: "br-ops" }],
    });
    expect(body.pool).toBe("vms");
    expect(file("bridge/br-ops", "52-54-00-bb-00-01")).toBe(`52:54:00:bb:00:01,${body.ip},bridged-1\n`);
  });

  test("a repeat with another MAC (a NIC replaced) moves the reservation and withdraws the old one", async () => {
    const before = hups();
    const { body } = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "bridged-1",
      interfaces: [{ mac: "52:54:00:bb:00:02", bridge: "br-ops" }],
    });
    expect(body.interface).toEqual({ mac: "52:54:00:bb:00:02", bridge: "br-ops" });
    expect(files("bridge/br-ops")).toEqual(["52-54-00-bb-00-02"]);
    expect(file("bridge/br-ops", "52-54-00-bb-00-02")).toBe(`52:54:00:bb:00:02,${body.ip},bridged-1\n`);
    // No pid file for the bridge's dnsmasq here: nothing to signal, and nothing fails.
    expect(hups()).toBe(before);
  });

  test("a pool that serves none of the NICs' networks or bridges reserves nothing", async () => {
    const { body } = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "plain-1",
      pool: "other",
      interfaces: [{ mac: "52:54:00:cc:00:01", network: "vmnet" }],
    });
    expect(body.pool).toBe("other");
    expect(body.interface).toBeUndefined();
    expect(files("network/vmnet")).toEqual(["52-54-00-aa-00-02"]);
  });

  test("releasing removes the reservation in the same request and makes dnsmasq forget it", async () => {
    const before = hups();
    const released = await daemon.json("/api/v1/ip/release/0d6f2a8e-1111-4222-8333-444455556666", {
      method: "DELETE",
    });
    expect(released.status).toBe(200);
    expect(files("network/vmnet")).toEqual([]);
    expect(await eventually(async () => hups() === before + 1, 5000)).toBe(true);
  });

  test("adopt (libvirt's reconnect of a running VM) takes the address its NIC has leased, if free", async () => {
    const leases = [
      { "ip-address": "10.77.0.200", "mac-address": "52:54:00:dd:00:01", hostname: "running", "expiry-time": 2e9 },
      { "ip-address": "10.99.0.5", "mac-address": "52:54:00:dd:00:02", "expiry-time": 2e9 },
    ];
    writeFileSync(join(dir, "libvirt-run/virbr9.status"), JSON.stringify(leases, null, 2));
    const adopted = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "running-1",
      adopt: true,
      interfaces: [{ mac: "52:54:00:dd:00:01", network: "vmnet" }],
    });
    expect(adopted.body.ip).toBe("10.77.0.200");
    expect(file("network/vmnet", "52-54-00-dd-00-01")).toBe("52:54:00:dd:00:01,10.77.0.200,running-1\n");
    // A lease outside the pool is not adopted: the VM gets an address of the pool as usual.
    const outside = await daemon.post("/api/v1/ip/allocate", {
      vm_id: "running-2",
      adopt: true,
      interfaces: [{ mac: "52:54:00:dd:00:02", network: "vmnet" }],
    });
    expect(outside.status).toBe(201);
    expect(outside.body.ip.startsWith("10.77.0.")).toBe(true);
  });

  test("a malformed MAC or an unknown link kind is refused with 422 and changes nothing", async () => {
    for (const interfaces of [
      [{ mac: "52:54:00:zz:00:01", network: "vmnet" }],
      [{ mac: "52:54:00:aa:00:09", vlan: "x" }],
    ]) {
      const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "bad-nic", interfaces });
      expect(status).toBe(422);
      expect(body.code).toBe("VALIDATION");
    }
    expect((await daemon.json("/api/v1/ip/bad-nic")).status).toBe(404);
  });
});
