/**
 * The address a NIC holds right now, from libvirt's lease file for its network
 * (`<libvirt_lease_dir>/<bridge>.status`, a JSON array libvirt's lease helper keeps for dnsmasq).
 * A VM that was running before ippool knew it (libvirt's `reconnect`) is given that address, so it
 * keeps it. An operator's dnsmasq keeps its leases where the operator chose: not read.
 */
import { join } from "node:path";
import { isIpv4, parseIpv4 } from "../net/ipv4.ts";
import { networkBridge, readOrNull } from "./dnsmasq.ts";
import type { Nic } from "./link.ts";

interface LibvirtLease {
  readonly "ip-address"?: unknown;
  readonly "mac-address"?: unknown;
}

export class LibvirtLeases {
  constructor(
    private readonly libvirtRunDir: string,
    private readonly libvirtLeaseDir: string,
  ) {}

  /** The IPv4 address the NIC's MAC has leased on its libvirt network, if any. */
  leasedAddress(nic: Nic): number | undefined {
    if (nic.link.kind !== "network") return undefined;
    const bridge = networkBridge(this.libvirtRunDir, nic.link.name);
    if (bridge === null) return undefined;
    let leases: unknown;
    try {
      leases = JSON.parse(readOrNull(join(this.libvirtLeaseDir, `${bridge}.status`)) || "[]");
    } catch {
      return undefined; // half written or not libvirt's: nothing to adopt
    }
    if (!Array.isArray(leases)) return undefined;
    const lease = (leases as LibvirtLease[]).find(
      (entry) => typeof entry["mac-address"] === "string" && entry["mac-address"].toLowerCase() === nic.mac,
    );
    const ip = lease?.["ip-address"];
    return typeof ip === "string" && isIpv4(ip) ? parseIpv4(ip) : undefined;
  }
}
