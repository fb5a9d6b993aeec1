/**
 * Reaching the dnsmasq that serves a link, without libvirt: its pid from a file (libvirt writes
 * `<libvirt_run_dir>/<network>.pid`; an operator's dnsmasq for a bridge is started with
 * `--pid-file=<dhcp dir>/bridge/<bridge>.pid`), its interface from libvirt's live network XML or
 * the bridge's own name. A dnsmasq that is not running has nothing to reload or release: it reads
 * the reservation directory when it starts.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log/logger.ts";
import { type Link, linkText } from "./link.ts";

export interface DnsmasqControl {
  /** Makes the link's dnsmasq re-read its reservations (SIGHUP), so a removed one is forgotten. */
  reload(link: Link): Promise<void>;
  /** Drops the lease `ip` → `mac` from the link's dnsmasq (`dhcp_release`), so another MAC can have `ip` at once. */
  releaseLease(link: Link, ip: string, mac: string): Promise<void>;
}

export class LocalDnsmasq implements DnsmasqControl {
  constructor(
    private readonly dhcpDir: string,
    private readonly libvirtRunDir: string,
    private readonly logger: Logger,
  ) {}

  async reload(link: Link): Promise<void> {
    const pid = this.pidOf(link);
    if (pid === null) return;
    try {
      process.kill(pid, "SIGHUP");
    } catch (error) {
      this.logger.warn("could not signal dnsmasq to forget a reservation", {
        link: linkText(link),
        pid,
        error: (error as Error).message,
      });
    }
  }

  async releaseLease(link: Link, ip: string, mac: string): Promise<void> {
    const iface = this.interfaceOf(link);
    if (iface === null || this.pidOf(link) === null) return;
    // argv, never a shell: the values are a validated interface name, address and MAC.
    const failure = await new Promise<string | null>((resolve) =>
      execFile("dhcp_release", [iface, ip, mac], { timeout: 5000 }, (error, _stdout, stderr) =>
        resolve(error ? stderr.trim() || error.message : null),
      ),
    );
    if (failure !== null) {
      this.logger.warn("could not release a DHCP lease (the address stays leased until it expires)", {
        link: linkText(link),
        ip,
        mac,
        error: failure,
      });
    }
  }

  private pidOf(link: Link): number | null {
    const file =
      link.kind === "network"
        ? join(this.libvirtRunDir, `${link.name}.pid`)
        : join(this.dhcpDir, "bridge", `${link.name}.pid`);
    const pid = Number(readOrNull(file)?.trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  }

  /** The interface dnsmasq serves: a network's bridge (from libvirt's live XML), or the bridge itself. */
  private interfaceOf(link: Link): string | null {
    return link.kind === "bridge" ? link.name : networkBridge(this.libvirtRunDir, link.name);
  }
}

/** A running libvirt network's bridge, from the live XML libvirt keeps in its runtime directory. */
export function networkBridge(libvirtRunDir: string, network: string): string | null {
  const xml = readOrNull(join(libvirtRunDir, `${network}.xml`)) ?? "";
  return /<bridge\s+name=['"]([A-Za-z0-9_.-]{1,15})['"]/.exec(xml)?.[1] ?? null;
}

/** A file's text, or null when it cannot be read (missing: the daemon or network is not running). */
export function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}
