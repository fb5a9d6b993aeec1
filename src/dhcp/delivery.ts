/** Pools' addresses delivered as dnsmasq reservations (`AddressDelivery` for the pool service). */
import type { Logger } from "../log/logger.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import type { Allocation } from "../pool/allocator.ts";
import type { AddressDelivery } from "../pool/delivery.ts";
import { dnsLabel } from "./label.ts";
import type { LibvirtLeases } from "./leases.ts";
import { type Link, linkText, type Nic, sameNic } from "./link.ts";
import type { DhcpReservations, Reservation } from "./reservations.ts";

export class DhcpDelivery implements AddressDelivery {
  /**
   * `ownHost` (fleet mode: this daemon's name, which is its host's) limits delivery to allocations
   * recorded on this host: a reservation is a file for the dnsmasq beside the VM, and
   * `dhcp_release` works only there, so another host's VM is its own daemon's to deliver. An
   * allocation naming no host names no dnsmasq either: in a fleet it gets no reservation (the hook
   * always names the host), since no daemon could tell, at its start, whether it is its own.
   */
  constructor(
    private readonly reservations: DhcpReservations,
    private readonly leases: LibvirtLeases,
    private readonly logger: Logger,
    private readonly ownHost?: string,
  ) {}

  /**
   * Deliveries, withdrawals and syncs run one at a time: a sync reads the allocations, then makes
   * the files match, and must not take a file written after its read for a stale one.
   */
  private tail: Promise<unknown> = Promise.resolve();

  private exclusive<T>(body: () => Promise<T>): Promise<T> {
    const run = this.tail.then(body);
    this.tail = run.catch(() => {});
    return run;
  }

  private delivers(allocation: Allocation): boolean {
    return this.ownHost === undefined || allocation.host === this.ownHost;
  }

  currentAddress(nic: Nic): number | undefined {
    return this.leases.leasedAddress(nic);
  }

  async deliver(allocation: Allocation, replaced?: Allocation): Promise<void> {
    const reservation = this.delivers(allocation) ? reservationOf(allocation) : null;
    if (reservation) await this.exclusive(() => this.reservations.reserve(reservation));
    // A repeat with another NIC (replaced, or moved to another link): its old reservation goes.
    if (replaced?.nic !== undefined && !sameNic(replaced.nic, allocation.nic)) await this.withdraw(replaced);
  }

  async withdraw(allocation: Allocation): Promise<void> {
    const reservation = this.delivers(allocation) ? reservationOf(allocation) : null;
    if (!reservation) return;
    try {
      await this.exclusive(() => this.reservations.withdraw(reservation));
    } catch (error) {
      this.logger.warn("DHCP reservation not withdrawn; it is removed at the next start", {
        link: linkText(reservation.link),
        mac: reservation.mac,
        ip: formatIpv4(reservation.ip),
        error: (error as Error).message,
      });
    }
  }

  /**
   * The links' directories exist and hold exactly the reservations of the allocations it delivers,
   * as `read` answers them (at start, and in fleet mode every interval: see resync.ts).
   */
  sync(links: readonly Link[], read: () => Promise<Iterable<Allocation>>): Promise<void> {
    return this.exclusive(async () => {
      this.reservations.prepare(links);
      const desired = [...(await read())].flatMap((allocation) =>
        this.delivers(allocation) ? (reservationOf(allocation) ?? []) : [],
      );
      const { written, removed } = await this.reservations.sync(links, desired);
      if (written + removed > 0)
        this.logger.info("DHCP reservations brought in line with the store", { written, removed });
    });
  }
}

/** The reservation an allocation implies; its name is the VM's name made a DNS label. */
export function reservationOf(allocation: Allocation): Reservation | null {
  if (!allocation.nic) return null;
  const label = dnsLabel(allocation.name ?? allocation.hostname ?? allocation.vmId);
  return {
    link: allocation.nic.link,
    mac: allocation.nic.mac,
    ip: allocation.ip,
    ...(label === null ? {} : { label }),
  };
}
