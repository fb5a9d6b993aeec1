/** Reservation files as dnsmasq reads them, with a scripted dnsmasq that records what it is asked. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DnsmasqControl } from "../../../src/dhcp/dnsmasq.ts";
import { dnsLabel } from "../../../src/dhcp/label.ts";
import type { Link } from "../../../src/dhcp/link.ts";
import { DhcpReservations } from "../../../src/dhcp/reservations.ts";
import { Logger } from "../../../src/log/logger.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";

describe("dnsLabel", () => {
  test.each([
    ["web-1", "web-1"],
    ["My_VM", "my-vm"],
    ["vm-ñandú", "vm-nandu"],
    ["Web Server (prod)", "web-server-prod"],
    ["--x--", "x"],
    ["a".repeat(80), "a".repeat(63)],
    ["___", null],
    ["日本", null],
  ])("%s → %s", (name, label) => {
    expect(dnsLabel(name)).toBe(label);
  });
});

describe("DhcpReservations", () => {
  const net: Link = { kind: "network", name: "default" };
  let dir: string;
  let asked: string[];
  let reservations: DhcpReservations;
  const dnsmasq: DnsmasqControl = {
    reload: async (link) => void asked.push(`reload ${link.name}`),
    releaseLease: async (link, ip, mac) => void asked.push(`release ${link.name} ${ip} ${mac}`),
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ippool-dhcp-unit-"));
    asked = [];
    reservations = new DhcpReservations(dir, dnsmasq, new Logger("text", "error", () => {}));
    reservations.prepare([net]);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const files = () => readdirSync(join(dir, "network/default")).sort();
  const web = { link: net, mac: "52:54:00:00:00:01", ip: parseIpv4("10.0.0.5"), label: "web" };

  test("reserve writes one MAC,IP,NAME file and leaves no temporary file behind", async () => {
    await reservations.reserve(web);
    expect(files()).toEqual(["52-54-00-00-00-01"]);
    expect(readFileSync(join(dir, "network/default/52-54-00-00-00-01"), "utf8")).toBe(
      "52:54:00:00:00:01,10.0.0.5,web\n",
    );
  });

  test("withdraw removes the file, then makes dnsmasq forget it and release the lease", async () => {
    await reservations.reserve(web);
    await reservations.withdraw(web);
    expect(files()).toEqual([]);
    expect(asked).toEqual(["reload default", "release default 10.0.0.5 52:54:00:00:00:01"]);
  });

  test("sync writes what is missing, removes what no allocation has (releasing its lease), keeps the rest", async () => {
    await reservations.reserve(web);
    writeFileSync(join(dir, "network/default/52-54-00-00-00-09"), "52:54:00:00:00:09,10.0.0.9,old\n");
    writeFileSync(join(dir, "network/default/.52-54-00-00-00-08.tmp"), "half written");
    const db = { link: net, mac: "52:54:00:00:00:02", ip: parseIpv4("10.0.0.6") };
    expect(await reservations.sync([net], [web, db])).toEqual({ written: 1, removed: 1 });
    expect(files()).toEqual([".52-54-00-00-00-08.tmp", "52-54-00-00-00-01", "52-54-00-00-00-02"]);
    expect(asked).toEqual(["release default 10.0.0.9 52:54:00:00:00:09", "reload default"]);
  });

  test("sync tells only the dnsmasq of a link that had stale files to forget them", async () => {
    const bridge: Link = { kind: "bridge", name: "br0" };
    reservations.prepare([bridge]);
    writeFileSync(join(dir, "network/default/52-54-00-00-00-09"), "52:54:00:00:00:09,10.0.0.9,old\n");
    expect(await reservations.sync([net, bridge], [])).toEqual({ written: 0, removed: 1 });
    expect(asked.filter((line) => line.startsWith("reload"))).toEqual(["reload default"]);
  });

  test("sync rewrites a file whose address no longer matches the allocation", async () => {
    writeFileSync(join(dir, "network/default/52-54-00-00-00-01"), "52:54:00:00:00:01,10.0.0.77,web\n");
    expect(await reservations.sync([net], [web])).toEqual({ written: 1, removed: 0 });
    // dnsmasq keeps what it read from a changed file until it re-reads: it is told to.
    expect(asked).toEqual(["reload default"]);
    expect(readFileSync(join(dir, "network/default/52-54-00-00-00-01"), "utf8")).toBe(
      "52:54:00:00:00:01,10.0.0.5,web\n",
    );
  });
});
