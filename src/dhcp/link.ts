/**
 * Where a VM's NIC meets a DHCP server: a libvirt network (whose dnsmasq libvirt runs) or a bridge
 * (whose dnsmasq the operator runs). A pool names the links it serves; a NIC on one of them gets
 * the VM's address reserved there.
 */
export type LinkKind = "network" | "bridge";

export interface Link {
  readonly kind: LinkKind;
  readonly name: string;
}

/** A link served by a pool. */
export interface PoolLink extends Link {
  readonly pool: string;
}

/** A VM's NIC as its domain XML describes it: its MAC and the network or bridge it is on. */
export interface Nic {
  readonly mac: string;
  readonly link: Link;
}

export interface DhcpConfig {
  /** Where reservation files live: `<dir>/<kind>/<name>/`, one file per reserved MAC. */
  readonly dir: string;
  /** libvirt's runtime directory for networks: `<name>.pid` (its dnsmasq) and `<name>.xml` (its bridge). */
  readonly libvirtRunDir: string;
  /** Where libvirt keeps its networks' leases: `<bridge>.status` (read to adopt a running VM's address). */
  readonly libvirtLeaseDir: string;
  readonly links: readonly PoolLink[];
}

export const sameLink = (a: Link, b: Link): boolean => a.kind === b.kind && a.name === b.name;

/** The same NIC: same MAC on the same link (both absent counts as the same). */
export const sameNic = (a: Nic | undefined, b: Nic | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.mac === b.mac && sameLink(a.link, b.link));

export const linkText = (link: Link): string => `${link.kind} ${link.name}`;
