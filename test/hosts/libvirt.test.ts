/** Instance checks over SSH with virsh and the libvirt test driver. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HostUnavailableError, InvalidCommandArgumentError } from "../../src/hosts/errors.ts";
import type { HostRegistry } from "../../src/hosts/registry.ts";
import { Testbed } from "../support/testbed.ts";
import { connectedRegistry } from "./helpers.ts";

const UUID = "0b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa";
let bed: Testbed;
let registry: HostRegistry;

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      {
        name: "hv1",
        vms: [
          { name: "lv11", uuid: UUID },
          { name: "lv12", state: "paused" },
          { name: "lv13", state: "shut off" },
        ],
      },
      { name: "hv2", vms: [{ name: "lv21" }, { name: "twin", privateIp: "192.168.100.29", state: "shut off" }] },
      { name: "hv3", vms: [{ name: "lv31" }] },
    ],
  });
  registry = await connectedRegistry(bed);
});

afterAll(async () => {
  await registry?.close();
  await bed?.destroy();
});

const libvirt = (host: string) => {
  const found = registry.get(host);
  if (!found) throw new Error(`no ${host}`);
  return found.libvirt;
};

describe("Libvirt", () => {
  test("instanceState reports running, paused and shut off, and null for a missing domain", async () => {
    expect(await libvirt("hv1").instanceState("lv11")).toBe("running");
    expect(await libvirt("hv1").instanceState("lv12")).toBe("paused");
    expect(await libvirt("hv1").instanceState("lv13")).toBe("shut off");
    expect(await libvirt("hv1").instanceState("lv21")).toBeNull();
    expect(await libvirt("hv1").instanceState("no-such-vm")).toBeNull();
  });

  test("instanceState accepts a UUID", async () => {
    expect(await libvirt("hv1").instanceState(UUID)).toBe("running");
    expect(await libvirt("hv1").instanceUuid("lv11")).toBe(UUID);
    expect(await libvirt("hv1").instanceUuid("missing")).toBeNull();
  });

  test("instanceState follows the host's libvirt as it changes", async () => {
    bed.setDomainState("hv1", "lv11", "shut off");
    expect(await libvirt("hv1").instanceState("lv11")).toBe("shut off");
    bed.setDomainState("hv1", "lv11", "paused");
    expect(await libvirt("hv1").instanceState("lv11")).toBe("paused");
    bed.setDomainState("hv1", "lv11", "running");
    expect(await libvirt("hv1").instanceState("lv11")).toBe("running");
  });

  test("listDomains lists every domain, running or not, by name and UUID", async () => {
    const domains = await libvirt("hv1").listDomains();
    expect(domains.sort((a, b) => a.name.localeCompare(b.name))).toEqual(
      ["lv11", "lv12", "lv13"].map((name) => ({ name, uuid: bed.vm(name).uuid })),
    );
    expect(domains.find((d) => d.name === "lv11")?.uuid).toBe(UUID);
  });

  test("instanceAddresses parses domifaddr (the test driver has no leases: empty)", async () => {
    expect(await libvirt("hv1").instanceAddresses("lv11")).toEqual([]);
    expect(await libvirt("hv1").instanceAddresses("missing")).toEqual([]);
  });

  test("a name that is not a valid domain name never reaches the host", async () => {
    for (const name of ["lv11; reboot", "$(reboot)", "-h", "a'b", "lv11\n"]) {
      await expect(libvirt("hv1").instanceState(name)).rejects.toBeInstanceOf(InvalidCommandArgumentError);
    }
  });
});

describe("HostRegistry.findInstance", () => {
  test("finds the host that has the instance, asking all hosts in parallel", async () => {
    const found = await registry.findInstance("lv21");
    expect(found?.host.name).toBe("hv2");
    expect(found?.state).toBe("running");
    expect((await registry.findInstance("lv12"))?.state).toBe("paused");
    expect(await registry.findInstance("nowhere")).toBeNull();
  });

  test("when two hosts know a domain, the running one wins", async () => {
    // "twin" exists (shut off) on hv2; define a running twin on hv3 too.
    const hv3 = bed.host("hv3");
    const xmlPath = hv3.libvirtUri.slice("test://".length);
    const xml = await Bun.file(xmlPath).text();
    const running = [
      "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>",
      "    <name>twin</name><memory>65536</memory><os><type>hvm</type></os>",
      "    <test:runstate>1</test:runstate>",
      "  </domain>",
      "",
    ].join("\n");
    await Bun.write(xmlPath, xml.replace("</node>", `${running}</node>`));
    try {
      const found = await registry.findInstance("twin");
      expect(found?.host.name).toBe("hv3");
      expect(found?.state).toBe("running");
    } finally {
      await Bun.write(xmlPath, xml);
    }
  });

  test("a host that is down is skipped; with no host to ask it is HostUnavailableError", async () => {
    await bed.stopSshd("hv1");
    const hv1 = registry.get("hv1");
    for (let i = 0; i < 100 && hv1?.connected; i++) await Bun.sleep(10);
    expect(hv1?.connected).toBe(false);
    expect((await registry.findInstance("lv21"))?.host.name).toBe("hv2");
    expect(await registry.findInstance("lv11")).toBeNull(); // only hv1 has it, and hv1 cannot be asked
    await bed.stopSshd("hv2");
    await bed.stopSshd("hv3");
    for (let i = 0; i < 100 && registry.all().some((h) => h.connected); i++) await Bun.sleep(10);
    const error = await registry.findInstance("lv21").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toContain("no host could be asked");
    await Promise.all(["hv1", "hv2", "hv3"].map((h) => bed.startSshd(h)));
    await Promise.all(registry.all().map((h) => h.connection.waitConnected(3000)));
    expect((await registry.findInstance("lv11"))?.host.name).toBe("hv1");
  });
});
