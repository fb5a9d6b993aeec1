/** The testbed itself: real sshd with the pinned key, libvirt test driver, VM responders, cleanup. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sh } from "../support/processes.ts";
import { Testbed } from "../support/testbed.ts";

let bed: Testbed;

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", vms: [{ name: "tb11" }, { name: "tb12", state: "paused" }] },
      {
        name: "hv2",
        vms: [{ name: "tb21", uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f", privateIp: "192.168.100.99" }],
      },
    ],
  });
});

afterAll(async () => {
  await bed?.destroy();
});

describe("testbed", () => {
  test("lays out hosts, VMs and addresses as documented", () => {
    expect(bed.id).toMatch(/^ipt[0-9a-f]{4}$/);
    expect(bed.hosts.map((h) => [h.name, h.address, h.namespace])).toEqual([
      ["hv1", "10.77.0.11", `${bed.id}-hv1`],
      ["hv2", "10.77.0.12", `${bed.id}-hv2`],
    ]);
    expect(bed.vm("tb11").privateIp).toBe("192.168.100.11");
    expect(bed.vm("tb12").privateIp).toBe("192.168.100.12");
    expect(bed.vm("tb21")).toMatchObject({
      privateIp: "192.168.100.99",
      host: "hv2",
      uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f",
    });
    for (const host of bed.hosts) {
      expect(host.hostKey).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
      expect(host.libvirtUri).toBe(`test://${bed.dir}/${host.name}.xml`);
      expect(host.publicInterface).toBe("eth0");
    }
  });

  test("OpenSSH reaches each host from the daemon namespace with the pinned host key", async () => {
    for (const host of bed.hosts) {
      const knownHosts = join(bed.dir, `known_hosts_${host.name}`);
      const publicKey = (await Bun.file(`${host.hostKeyPath}.pub`).text()).split(" ").slice(0, 2).join(" ");
      writeFileSync(knownHosts, `${host.address} ${publicKey}\n`);
      const started = performance.now();
      const result = await sh([
        ...bed.daemonNetnsPrefix(),
        "ssh",
        ...["-i", host.privateKeyPath, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"],
        ...["-o", `UserKnownHostsFile=${knownHosts}`, "-o", "ConnectTimeout=5"],
        `${host.user}@${host.address}`,
        "ip -o -4 addr show dev eth0",
      ]);
      expect(result.stdout).toContain(`${host.address}/24`);
      expect(performance.now() - started).toBeLessThan(3000);
      // The key the server presents is the one whose fingerprint the testbed reports.
      const scan = await sh([...bed.daemonNetnsPrefix(), "ssh-keyscan", "-t", "ed25519", host.address]);
      const scanned = join(bed.dir, `scanned_${host.name}`);
      writeFileSync(scanned, scan.stdout);
      const fingerprint = await sh(["ssh-keygen", "-lf", scanned]);
      expect(fingerprint.stdout.split(" ")[1]).toBe(host.hostKey);
    }
  });

  test("the private key is mode 0600", async () => {
    const { stdout } = await sh(["stat", "-c", "%a", bed.hosts[0]?.privateKeyPath as string]);
    expect(stdout.trim()).toBe("600");
  });

  test("virsh domstate follows setDomainState", async () => {
    const domstate = async (host: string, vm: string) =>
      (await bed.hostExec(host, ["virsh", "-c", bed.host(host).libvirtUri, "domstate", vm])).stdout.trim();
    expect(await domstate("hv1", "tb11")).toBe("running");
    expect(await domstate("hv1", "tb12")).toBe("paused");
    bed.setDomainState("hv1", "tb11", "shut off");
    expect(await domstate("hv1", "tb11")).toBe("shut off");
    bed.setDomainState("hv1", "tb11", "paused");
    expect(await domstate("hv1", "tb11")).toBe("paused");
    bed.setDomainState("hv1", "tb11", "running");
    expect(await domstate("hv1", "tb11")).toBe("running");
    expect(await domstate("hv2", "6695eb01-f6a4-8304-79aa-97f2502e193f")).toBe("running");
    const missing = await bed.hostExec("hv1", ["virsh", "-c", bed.host("hv1").libvirtUri, "domstate", "tb21"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("failed to get domain");
  });

  test("each VM's responder answers with its name from its host's namespace", async () => {
    expect(await bed.probeFromHost("hv1", "192.168.100.11")).toBe("tb11");
    expect(await bed.probeFromHost("hv1", "192.168.100.12")).toBe("tb12");
    expect(await bed.probeFromHost("hv2", "192.168.100.99")).toBe("tb21");
  });

  test("without NAT an EIP answers nothing and a VM's traffic leaves with its private address", async () => {
    expect(await bed.probe("100.64.0.5", { timeoutMs: 200 })).toBeNull();
    expect(await bed.snatSource("tb11")).toBe("192.168.100.11");
  });

  test("hostsToml renders one [[hosts]] section per host", () => {
    const toml = Bun.TOML.parse(bed.hostsToml({ commandTimeoutMs: 2000 })) as { hosts: Record<string, unknown>[] };
    expect(toml.hosts).toHaveLength(2);
    expect(toml.hosts[0]).toEqual({
      name: "hv1",
      address: "10.77.0.11",
      port: 22,
      user: "root",
      private_key: bed.host("hv1").privateKeyPath,
      host_key: bed.host("hv1").hostKey,
      libvirt_uri: bed.host("hv1").libvirtUri,
      public_interface: "eth0",
      command_timeout_ms: 2000,
    });
  });

  test("a bad spec is refused before anything is built", async () => {
    await expect(Testbed.create({ hosts: [{ name: "HV 1" }] })).rejects.toThrow("testbed: bad host name");
    await expect(
      Testbed.create({
        hosts: [
          { name: "hva", vms: [{ name: "dup" }] },
          { name: "hvb", vms: [{ name: "dup" }] },
        ],
      }),
    ).rejects.toThrow("testbed: VM dup twice");
    await expect(
      Testbed.create({ hosts: [{ name: "hva", vms: [{ name: "v", privateIp: "192.168.100.1" }] }] }),
    ).rejects.toThrow(/privateIp must be in 192\.168\.100\.2-254/);
  });

  test("destroy removes namespaces, processes and files, and can be called twice", async () => {
    const other = await Testbed.create({ hosts: [{ name: "hx", vms: [{ name: "tbx1" }] }] });
    const running = await sh(["pgrep", "-f", other.dir]);
    expect(running.stdout.trim().split("\n").length).toBeGreaterThanOrEqual(3); // sshd, two agents
    await other.destroy();
    await other.destroy();
    const { stdout } = await sh(["ip", "netns", "list"]);
    expect(stdout).not.toContain(`${other.id}-`);
    expect(existsSync(other.dir)).toBe(false);
    const left = await sh(["pgrep", "-f", other.dir], { allowFail: true });
    expect(left.stdout.trim()).toBe("");
  });
});
