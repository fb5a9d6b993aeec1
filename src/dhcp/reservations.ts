/**
 * DHCP reservations as files that dnsmasq reads itself: `dhcp-hostsdir=<dir>/<kind>/<name>` holds
 * one `MAC,IP[,NAME]` file per reserved NIC. dnsmasq watches that directory with inotify and reads
 * a new file at once, without a signal and without libvirtd: the libvirt hook's `prepare` waits on
 * the daemon, and the daemon never calls libvirt, so nothing here can deadlock libvirtd (libvirt
 * documents that a hook calling back into it can). dnsmasq forgets a removed file only when it
 * re-reads its configuration (SIGHUP), and keeps the old lease until it expires: a withdrawal
 * therefore removes the file, signals dnsmasq, and releases the lease with `dhcp_release`, so the
 * next VM given the address gets it.
 */
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log/logger.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import { type DnsmasqControl, readOrNull } from "./dnsmasq.ts";
import { type Link, linkText, sameLink } from "./link.ts";

export interface Reservation {
  readonly link: Link;
  /** Lower case, colon-separated. */
  readonly mac: string;
  readonly ip: number;
  /** A DNS label for the VM (see `label.ts`), when its name yields one. */
  readonly label?: string;
}

/** The file's name for a MAC: dnsmasq skips dotfiles, so temporary files start with a dot. */
const fileOf = (mac: string): string => mac.replaceAll(":", "-");
const macOf = (file: string): string => file.replaceAll("-", ":");
const MAC_FILE = /^[0-9a-f]{2}(-[0-9a-f]{2}){5}$/;

export class DhcpReservations {
  constructor(
    private readonly dir: string,
    private readonly dnsmasq: DnsmasqControl,
    private readonly logger: Logger,
  ) {}

  /** Creates each link's directory (mode 0755: dnsmasq reads it after dropping root). */
  prepare(links: readonly Link[]): void {
    for (const link of links) mkdirSync(this.linkDir(link), { recursive: true, mode: 0o755 });
  }

  /**
   * Puts the reservation in effect: written to a dotfile, then renamed into place (dnsmasq sees it
   * whole). A file that held something else is replaced and dnsmasq reloaded: it keeps what it
   * read from a changed file until it re-reads its configuration. Answers whether it wrote.
   */
  async reserve(reservation: Reservation): Promise<boolean> {
    const text = lineOf(reservation);
    const path = join(this.linkDir(reservation.link), fileOf(reservation.mac));
    const before = readOrNull(path);
    if (before === text) return false;
    const temporary = join(this.linkDir(reservation.link), `.${fileOf(reservation.mac)}.tmp`);
    writeFileSync(temporary, text, { mode: 0o644 });
    renameSync(temporary, path);
    if (before !== null) await this.dnsmasq.reload(reservation.link);
    return true;
  }

  /** Takes the reservation back: file, dnsmasq's copy of it, and the lease it gave. */
  async withdraw(reservation: Reservation): Promise<void> {
    rmSync(join(this.linkDir(reservation.link), fileOf(reservation.mac)), { force: true });
    await this.dnsmasq.reload(reservation.link);
    await this.dnsmasq.releaseLease(reservation.link, formatIpv4(reservation.ip), reservation.mac);
  }

  /**
   * Makes each link's directory hold exactly `desired` (at start: a crash between a commit and its
   * file leaves one missing or one too many). Answers how many files were written and removed.
   */
  async sync(links: readonly Link[], desired: readonly Reservation[]): Promise<{ written: number; removed: number }> {
    let written = 0;
    let removed = 0;
    for (const link of links) {
      const wanted = new Map(desired.filter((r) => sameLink(r.link, link)).map((r) => [fileOf(r.mac), r]));
      const stale = readdirSync(this.linkDir(link)).filter((file) => MAC_FILE.test(file) && !wanted.has(file));
      for (const file of stale) await this.removeStale(link, file);
      if (stale.length > 0) await this.dnsmasq.reload(link);
      removed += stale.length;
      for (const reservation of wanted.values()) if (await this.reserve(reservation)) written++;
    }
    return { written, removed };
  }

  /** A file no allocation stands for: removed, and the lease it may have given released. */
  private async removeStale(link: Link, file: string): Promise<void> {
    const path = join(this.linkDir(link), file);
    const ip = readOrNull(path)?.split(",")[1]?.trim();
    rmSync(path, { force: true });
    if (ip) await this.dnsmasq.releaseLease(link, ip, macOf(file));
    this.logger.info("stale DHCP reservation removed", { link: linkText(link), mac: macOf(file) });
  }

  private linkDir(link: Link): string {
    return join(this.dir, link.kind, link.name);
  }
}

function lineOf(reservation: Reservation): string {
  const fields = [reservation.mac, formatIpv4(reservation.ip), ...(reservation.label ? [reservation.label] : [])];
  return `${fields.join(",")}\n`;
}
