import { describe, expect, test } from "bun:test";
import { InvalidCommandArgumentError } from "../../../src/hosts/errors.ts";
import { hostKeyFingerprint } from "../../../src/hosts/fingerprint.ts";
import { parseDomifaddr } from "../../../src/hosts/libvirt.ts";
import { nftTransaction, parseAddresses, parseNftTable } from "../../../src/hosts/nft.ts";
import { Slots } from "../../../src/hosts/slots.ts";

const A = { eip: "100.64.0.5", privateIp: "192.168.100.11" };

describe("nftTransaction", () => {
  test("creates the table, maps, chains and rules, then deletes before it adds", () => {
    const text = nftTransaction(
      { dnatDelete: ["100.64.0.9"], dnatAdd: [A], snatDelete: ["192.168.100.12"], snatAdd: [A] },
      true,
    );
    expect(text.split("\n")).toEqual([
      "add table ip ippool",
      "add map ip ippool eip_dnat { type ipv4_addr : ipv4_addr; }",
      "add map ip ippool eip_snat { type ipv4_addr : ipv4_addr; }",
      "add chain ip ippool prerouting { type nat hook prerouting priority dstnat; policy accept; }",
      "add chain ip ippool postrouting { type nat hook postrouting priority srcnat; policy accept; }",
      "flush chain ip ippool prerouting",
      "flush chain ip ippool postrouting",
      "add rule ip ippool prerouting dnat to ip daddr map @eip_dnat",
      "add rule ip ippool postrouting snat to ip saddr map @eip_snat",
      "delete element ip ippool eip_dnat { 100.64.0.9 }",
      "delete element ip ippool eip_snat { 192.168.100.12 }",
      "add element ip ippool eip_dnat { 100.64.0.5 : 192.168.100.11 }",
      "add element ip ippool eip_snat { 192.168.100.11 : 100.64.0.5 }",
      "",
    ]);
  });

  test("without ensure it only changes elements", () => {
    expect(nftTransaction({ dnatDelete: [A.eip], dnatAdd: [], snatDelete: [], snatAdd: [] }, false)).toBe(
      "delete element ip ippool eip_dnat { 100.64.0.5 }\n",
    );
  });

  test("refuses anything but IPv4 addresses", () => {
    const bad = { eip: "100.64.0.5 }\nflush ruleset\n", privateIp: A.privateIp };
    expect(() => nftTransaction({ dnatDelete: [], dnatAdd: [bad], snatDelete: [], snatAdd: [] }, false)).toThrow(
      InvalidCommandArgumentError,
    );
  });
});

describe("parseNftTable", () => {
  // Captured from nftables 1.0.6: `nft -j list table ip ippool` after one association.
  const LISTED = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6", release_name: "Lester Gooch #5", json_schema_version: 1 } },
      { table: { family: "ip", name: "ippool", handle: 1 } },
      {
        map: {
          family: "ip",
          name: "eip_dnat",
          table: "ippool",
          type: "ipv4_addr",
          handle: 1,
          map: "ipv4_addr",
          elem: [["100.64.0.5", "192.168.100.11"]],
        },
      },
      {
        map: {
          family: "ip",
          name: "eip_snat",
          table: "ippool",
          type: "ipv4_addr",
          handle: 2,
          map: "ipv4_addr",
          elem: [["192.168.100.11", "100.64.0.5"]],
        },
      },
      {
        chain: {
          family: "ip",
          table: "ippool",
          name: "prerouting",
          handle: 3,
          type: "nat",
          hook: "prerouting",
          prio: -100,
          policy: "accept",
        },
      },
      {
        chain: {
          family: "ip",
          table: "ippool",
          name: "postrouting",
          handle: 4,
          type: "nat",
          hook: "postrouting",
          prio: 100,
          policy: "accept",
        },
      },
      {
        rule: {
          family: "ip",
          table: "ippool",
          chain: "prerouting",
          handle: 7,
          expr: [
            { dnat: { addr: { map: { key: { payload: { protocol: "ip", field: "daddr" } }, data: "@eip_dnat" } } } },
          ],
        },
      },
      {
        rule: {
          family: "ip",
          table: "ippool",
          chain: "postrouting",
          handle: 8,
          expr: [
            { snat: { addr: { map: { key: { payload: { protocol: "ip", field: "saddr" } }, data: "@eip_snat" } } } },
          ],
        },
      },
    ],
  });

  test("reads both maps and sees the table intact", () => {
    expect(parseNftTable(LISTED)).toEqual({ exists: true, intact: true, dnat: [A], snat: [A] });
  });

  test("a table without its rules is not intact", () => {
    const parsed = JSON.parse(LISTED) as { nftables: object[] };
    const withoutRules = { nftables: parsed.nftables.filter((item) => !("rule" in item)) };
    expect(parseNftTable(JSON.stringify(withoutRules))).toMatchObject({ exists: true, intact: false, dnat: [A] });
  });

  test("a duplicated rule is not intact", () => {
    const parsed = JSON.parse(LISTED) as { nftables: object[] };
    const doubled = { nftables: [...parsed.nftables, parsed.nftables[6]] };
    expect(parseNftTable(JSON.stringify(doubled)).intact).toBe(false);
  });

  test("empty maps have no elements", () => {
    expect(parseNftTable('{"nftables":[{"table":{"name":"ippool"}},{"map":{"name":"eip_dnat"}}]}')).toEqual({
      exists: true,
      intact: false,
      dnat: [],
      snat: [],
    });
  });
});

test("parseAddresses keeps IPv4 /32s only", () => {
  const json = JSON.stringify([
    {
      ifname: "eth0",
      addr_info: [
        { family: "inet", local: "10.77.0.11", prefixlen: 24 },
        { family: "inet", local: "100.64.0.5", prefixlen: 32 },
        { family: "inet6", local: "fe80::1", prefixlen: 64 },
      ],
    },
  ]);
  expect(parseAddresses(json)).toEqual(["100.64.0.5"]);
  expect(parseAddresses("")).toEqual([]);
});

test("parseDomifaddr reads the ipv4 lines", () => {
  const output = [
    " Name       MAC address          Protocol     Address",
    "-------------------------------------------------------------------------------",
    " vnet0      52:54:00:00:00:11    ipv4         192.168.100.11/24",
    " -          -                    ipv4         192.168.100.50/24",
    " vnet1      52:54:00:00:00:12    ipv6         fd00::11/64",
    "",
  ].join("\n");
  expect(parseDomifaddr(output)).toEqual(["192.168.100.11", "192.168.100.50"]);
  expect(parseDomifaddr("")).toEqual([]);
});

test("hostKeyFingerprint matches ssh-keygen -lf", async () => {
  const dir = (await Bun.$`mktemp -d`.text()).trim();
  try {
    await Bun.$`ssh-keygen -q -t ed25519 -N '' -f ${dir}/k`.quiet();
    const pub = await Bun.file(`${dir}/k.pub`).text();
    const blob = Buffer.from(pub.split(" ")[1] as string, "base64");
    const printed = (await Bun.$`ssh-keygen -lf ${dir}/k.pub`.text()).split(" ")[1];
    expect(hostKeyFingerprint(blob)).toBe(printed as string);
  } finally {
    await Bun.$`rm -rf ${dir}`.quiet();
  }
});

describe("Slots", () => {
  test("queues beyond its size and hands slots over in order", async () => {
    const slots = new Slots(2);
    const order: number[] = [];
    const first = await slots.acquire(1000, () => new Error("timeout"));
    const second = await slots.acquire(1000, () => new Error("timeout"));
    const third = slots
      .acquire(1000, () => new Error("timeout"))
      .then((release) => {
        order.push(3);
        return release;
      });
    await Bun.sleep(5);
    expect(order).toEqual([]);
    first();
    (await third)();
    second();
    expect(order).toEqual([3]);
  });

  test("a waiter that times out gets its error and does not take a slot later", async () => {
    const slots = new Slots(1);
    const held = await slots.acquire(1000, () => new Error("timeout"));
    await expect(slots.acquire(10, () => new Error("waited too long"))).rejects.toThrow("waited too long");
    held();
    const again = await slots.acquire(10, () => new Error("timeout"));
    again();
  });
});
