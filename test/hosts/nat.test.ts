/**
 * The NAT driver on real hosts: nftables in the host namespaces, traffic from the uplink to the
 * EIP reaching the right VM, and the VM's own traffic leaving as the EIP.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { HostCommandFailedError, InvalidCommandArgumentError } from "../../src/hosts/errors.ts";
import type { Host } from "../../src/hosts/host.ts";
import { NatDriver } from "../../src/hosts/nat.ts";
import type { HostRegistry } from "../../src/hosts/registry.ts";
import { type Cidr, parseCidr } from "../../src/net/ipv4.ts";
import { Testbed } from "../support/testbed.ts";
import { answering, connectedRegistry } from "./helpers.ts";

let bed: Testbed;
let registry: HostRegistry;
let ranges: Cidr[];

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", vms: [{ name: "n11" }, { name: "n12" }] },
      { name: "hv2", vms: [{ name: "n21" }] },
    ],
  });
  registry = await connectedRegistry(bed);
  ranges = [parseCidr(bed.eipCidr)];
});

afterEach(async () => {
  // Every test starts from hosts without associations.
  await Promise.all(registry.all().map((host) => host.nat.converge([], ranges)));
});

afterAll(async () => {
  await registry?.close();
  await bed?.destroy();
});

function host(name: string): Host {
  const found = registry.get(name);
  if (!found) throw new Error(`no host ${name}`);
  return found;
}

const ip = (vm: string) => bed.vm(vm).privateIp;

async function table(hostName: string): Promise<string> {
  return (await bed.hostExec(hostName, ["nft", "list", "table", "ip", "ippool"])).stdout;
}

describe("applyAssociation / removeAssociation", () => {
  test("a host changed behind ippool's back (its table flushed) is planned again from a fresh read", async () => {
    const nat = host("hv1").nat;
    await nat.applyAssociation({ eip: "100.64.0.20", privateIp: ip("n11") });
    await bed.flushHost("hv1");
    // The driver's view still has the first association; the host has no table at all.
    await nat.applyAssociation({ eip: "100.64.0.21", privateIp: ip("n12") });
    expect(await bed.probe("100.64.0.21")).toBe("n12");
    // Re-applying what the stale view already holds is not skipped.
    await bed.flushHost("hv1");
    await nat.applyAssociation({ eip: "100.64.0.21", privateIp: ip("n12") });
    expect(await bed.probe("100.64.0.21")).toBe("n12");
    await nat.removeAssociation("100.64.0.21");
    expect(await bed.probe("100.64.0.21", { timeoutMs: 300 })).toBeNull();
  });

  test("an association carries the EIP's traffic to the VM and the VM's traffic out as the EIP", async () => {
    const eip = "100.64.0.10";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await bed.probe(eip)).toBe("n11");
    expect(await bed.snatSource("n11")).toBe(eip);
    expect(await bed.snatSource("n12")).toBe(ip("n12")); // other VMs are not translated
    expect(await bed.hostAddresses("hv1")).toEqual([eip]);
    const listed = await table("hv1");
    expect(listed).toContain(`${eip} : ${ip("n11")}`);
    expect(listed).toContain(`${ip("n11")} : ${eip}`);
    const state = await host("hv1").nat.readState(ranges);
    expect(state).toMatchObject({
      associations: [{ eip, privateIp: ip("n11") }],
      snat: [{ eip, privateIp: ip("n11") }],
      addresses: [eip],
      tableExists: true,
      tableIntact: true,
    });
  });

  test("applying the same association again changes nothing and keeps working", async () => {
    const eip = "100.64.0.11";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    const before = await table("hv1");
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await table("hv1")).toBe(before);
    expect(await bed.probe(eip)).toBe("n11");
  });

  test("re-pointing an EIP to another VM on the same host replaces its elements", async () => {
    const eip = "100.64.0.12";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await bed.probe(eip)).toBe("n11");
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n12") });
    expect(await bed.probe(eip)).toBe("n12");
    expect(await bed.snatSource("n12")).toBe(eip);
    expect(await bed.snatSource("n11")).toBe(ip("n11"));
    const state = await host("hv1").nat.readState(ranges);
    expect(state.associations).toEqual([{ eip, privateIp: ip("n12") }]);
    expect(state.snat).toEqual([{ eip, privateIp: ip("n12") }]);
  });

  test("removing an association stops the traffic, restores the VM's own address, and is idempotent", async () => {
    const eip = "100.64.0.13";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await bed.probe(eip)).toBe("n11");
    await host("hv1").nat.removeAssociation(eip);
    expect(await bed.probe(eip, { timeoutMs: 300 })).toBeNull();
    expect(await bed.snatSource("n11")).toBe(ip("n11"));
    expect(await bed.hostAddresses("hv1")).toEqual([]);
    expect(await host("hv1").nat.readState(ranges)).toMatchObject({ associations: [], snat: [], addresses: [] });
    await host("hv1").nat.removeAssociation(eip);
    await host("hv2").nat.removeAssociation(eip); // never had it, no table even
  });

  test("moving an EIP to a VM on another host: the probe reaches the new VM", async () => {
    const eip = "100.64.0.14";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await bed.probe(eip)).toBe("n11");
    const arrival = bed.probeUntil(eip, "n21", 5000);
    const started = performance.now();
    await host("hv1").nat.removeAssociation(eip);
    await host("hv2").nat.applyAssociation({ eip, privateIp: ip("n21") });
    const requestMs = performance.now() - started;
    const elapsed = await arrival;
    console.log(
      `EIP move hv1 -> hv2: commands ${requestMs.toFixed(0)} ms, traffic at the new VM after ${elapsed.toFixed(0)} ms`,
    );
    expect(await bed.probe(eip)).toBe("n21");
    expect(await bed.snatSource("n21")).toBe(eip);
    expect(await bed.hostAddresses("hv1")).toEqual([]);
    expect(await bed.hostAddresses("hv2")).toEqual([eip]);
  });

  test("moving an EIP away from a host that is down (failover): traffic reaches the new VM", async () => {
    const eip = "100.64.0.15";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    expect(await bed.probe(eip)).toBe("n11");
    await bed.hostDown("hv1");
    try {
      const arrival = bed.probeUntil(eip, "n21", 5000);
      await host("hv2").nat.applyAssociation({ eip, privateIp: ip("n21") });
      const elapsed = await arrival;
      console.log(`EIP failover from a dead host: traffic at the new VM after ${elapsed.toFixed(0)} ms`);
      expect(await bed.probe(eip)).toBe("n21");
    } finally {
      await bed.hostUp("hv1");
      await answering(host("hv1"));
    }
    // hv1 came back still holding the EIP: reconciliation removes it there, and traffic stays on hv2.
    expect(await bed.hostAddresses("hv1")).toEqual([eip]);
    const result = await host("hv1").nat.converge([], ranges);
    expect(result.removed).toEqual([{ eip, privateIp: ip("n11") }]);
    expect(await bed.hostAddresses("hv1")).toEqual([]);
    expect(await bed.probe(eip)).toBe("n21");
  });

  test("invalid addresses never reach the host", async () => {
    const nat = host("hv1").nat;
    await expect(nat.applyAssociation({ eip: "100.64.0.1; reboot", privateIp: ip("n11") })).rejects.toBeInstanceOf(
      InvalidCommandArgumentError,
    );
    await expect(nat.applyAssociation({ eip: "100.64.0.16", privateIp: "$(reboot)" })).rejects.toBeInstanceOf(
      InvalidCommandArgumentError,
    );
    await expect(nat.removeAssociation("100.64.0.16 }\nflush ruleset")).rejects.toBeInstanceOf(
      InvalidCommandArgumentError,
    );
    expect(() => new NatDriver(host("hv1").connection, "eth0; reboot")).toThrow(InvalidCommandArgumentError);
  });

  test("a failing host command is a HostCommandFailedError naming the command and its stderr", async () => {
    const broken = new NatDriver(host("hv1").connection, "eth9");
    const error = await broken.applyAssociation({ eip: "100.64.0.17", privateIp: ip("n11") }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect((error as Error).message).toContain("`ip -4 addr replace 100.64.0.17/32 dev eth9` exited with status 1");
    expect((error as Error).message).toContain('Cannot find device "eth9"');
  });
});

describe("converge", () => {
  test("after a host lost its state (reboot), converge restores the rules and the address", async () => {
    const eip = "100.64.0.20";
    const desired = [{ eip, privateIp: ip("n11") }];
    await host("hv1").nat.applyAssociation(desired[0] as (typeof desired)[0]);
    await bed.flushHost("hv1");
    expect(await table("hv1")).toBe("");
    expect(await bed.probe(eip, { timeoutMs: 300 })).toBeNull();
    const result = await host("hv1").nat.converge(desired, ranges);
    expect(result).toEqual({ added: desired, removed: [], changed: [] });
    expect(await bed.probe(eip)).toBe("n11");
    expect(await bed.snatSource("n11")).toBe(eip);
    expect(await host("hv1").nat.converge(desired, ranges)).toEqual({ added: [], removed: [], changed: [] });
  });

  test("converge([]) removes a stale association, rules and address", async () => {
    const eip = "100.64.0.21";
    await host("hv2").nat.applyAssociation({ eip, privateIp: ip("n21") });
    expect(await bed.probe(eip)).toBe("n21");
    const result = await host("hv2").nat.converge([], ranges);
    expect(result).toEqual({ added: [], removed: [{ eip, privateIp: ip("n21") }], changed: [] });
    expect(await bed.probe(eip, { timeoutMs: 300 })).toBeNull();
    expect(await bed.snatSource("n21")).toBe(ip("n21"));
    expect(await host("hv2").nat.readState(ranges)).toMatchObject({ associations: [], snat: [], addresses: [] });
  });

  test("converge applies several changes at once: add, change and remove", async () => {
    await host("hv1").nat.applyAssociation({ eip: "100.64.0.22", privateIp: ip("n11") });
    await host("hv1").nat.applyAssociation({ eip: "100.64.0.23", privateIp: ip("n12") });
    // Wanted: .22 moves to n12, .23 goes away, .24 comes to n11.
    const result = await host("hv1").nat.converge(
      [
        { eip: "100.64.0.22", privateIp: ip("n12") },
        { eip: "100.64.0.24", privateIp: ip("n11") },
      ],
      ranges,
    );
    expect(result).toEqual({
      added: [{ eip: "100.64.0.24", privateIp: ip("n11") }],
      removed: [{ eip: "100.64.0.23", privateIp: ip("n12") }],
      changed: [{ eip: "100.64.0.22", from: ip("n11"), to: ip("n12") }],
    });
    expect(await bed.probe("100.64.0.22")).toBe("n12");
    expect(await bed.probe("100.64.0.24")).toBe("n11");
    expect(await bed.probe("100.64.0.23", { timeoutMs: 300 })).toBeNull();
    expect((await bed.hostAddresses("hv1")).sort()).toEqual(["100.64.0.22", "100.64.0.24"]);
  });

  test("converge repairs a damaged table (rule deleted by hand)", async () => {
    const eip = "100.64.0.25";
    await host("hv1").nat.applyAssociation({ eip, privateIp: ip("n11") });
    await bed.hostExec("hv1", ["nft", "flush", "chain", "ip", "ippool", "prerouting"]);
    expect(await bed.probe(eip, { timeoutMs: 300 })).toBeNull();
    expect((await host("hv1").nat.readState(ranges)).tableIntact).toBe(false);
    await host("hv1").nat.converge([{ eip, privateIp: ip("n11") }], ranges);
    expect((await host("hv1").nat.readState(ranges)).tableIntact).toBe(true);
    expect(await bed.probe(eip)).toBe("n11");
  });

  test("converge([]) on a host without ippool's table creates nothing", async () => {
    await bed.flushHost("hv2");
    expect(await host("hv2").nat.converge([], ranges)).toEqual({ added: [], removed: [], changed: [] });
    expect(await table("hv2")).toBe("");
  });
});

describe("what ippool does not own", () => {
  test("other nftables tables and addresses outside the EIP ranges are never touched", async () => {
    const other = [
      "table inet filter_other {",
      "  chain input {",
      "    type filter hook input priority 0; policy accept;",
      "    tcp dport 9999 counter accept",
      "  }",
      "}",
      "table ip nat {",
      "  chain postrouting {",
      "    type nat hook postrouting priority 100; policy accept;",
      "    ip saddr 10.99.0.0/24 masquerade",
      "  }",
      "}",
      "",
    ].join("\n");
    expect((await bed.hostExec("hv1", ["nft", "-f", "-"], { stdin: other })).code).toBe(0);
    // An address on eth0 inside 100.64.0.0/24 but outside the EIP range 100.64.0.0/25.
    expect((await bed.hostExec("hv1", ["ip", "addr", "add", "100.64.0.200/32", "dev", "eth0"])).code).toBe(0);
    const snapshot = async () => ({
      filter: (await bed.hostExec("hv1", ["nft", "list", "table", "inet", "filter_other"])).stdout,
      nat: (await bed.hostExec("hv1", ["nft", "list", "table", "ip", "nat"])).stdout,
    });
    const before = await snapshot();
    expect(before.filter).toContain("tcp dport 9999");
    try {
      await host("hv1").nat.applyAssociation({ eip: "100.64.0.30", privateIp: ip("n11") });
      await host("hv1").nat.converge([{ eip: "100.64.0.31", privateIp: ip("n12") }], ranges);
      await host("hv1").nat.removeAssociation("100.64.0.31");
      await host("hv1").nat.converge([], ranges);
      expect(await snapshot()).toEqual(before);
      expect((await host("hv1").nat.readState(ranges)).addresses).toEqual([]);
      expect((await host("hv1").nat.readState()).addresses).toEqual(["100.64.0.200"]);
      expect(await bed.hostAddresses("hv1")).toEqual(["100.64.0.200"]);
      const eth0 = (await bed.hostExec("hv1", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])).stdout;
      expect(eth0).toContain("10.77.0.11/24");
      expect(await bed.probe("100.64.0.30", { timeoutMs: 300 })).toBeNull();
    } finally {
      await bed.hostExec("hv1", ["nft", "delete", "table", "inet", "filter_other"]);
      await bed.hostExec("hv1", ["nft", "delete", "table", "ip", "nat"]);
      await bed.hostExec("hv1", ["ip", "addr", "del", "100.64.0.200/32", "dev", "eth0"]);
    }
  });
});
