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
  constructor(
    private readonly reservations: DhcpReservations,
    private readonly leases: LibvirtLeases,
    private readonly logger: Logger,
  ) {}

  currentAddress(nic: Nic): number | undefined {
    return this.leases.leasedAddress(nic);
  }

  async deliver(allocation: Allocation, replaced?: Allocation): Promise<void> {
    const reservation = reservationOf(allocation);
    if (reservation) await this.reservations.reserve(reservation);
    // A repeat with another NIC (replaced, or moved to another link): its old reservation goes.
    if (replaced?.nic !== undefined && !sameNic(replaced.nic, allocation.nic)) await this.withdraw(replaced);
  }

  async withdraw(allocation: Allocation): Promise<void> {
    const reservation = reservationOf(allocation);
    if (!reservation) return;
    try {
      await this.reservations.withdraw(reservation);
    } catch (error) {
      this.logger.warn("DHCP reservation not withdrawn; it is removed at the next start", {
        link: linkText(reservation.link),
        mac: reservation.mac,
        ip: formatIpv4(reservation.ip),
        error: (error as Error).message,
      });
    }
  }

  /** At start: the links' directories exist and hold exactly the allocations' reservations. */
  async sync(links: readonly Link[], allocations: Iterable<Allocation>): Promise<void> {
    this.reservations.prepare(links);
    const desired = [...allocations].flatMap((allocation) => reservationOf(allocation) ?? []);
    const { written, removed } = await this.reservations.sync(links, desired);
    if (written + removed > 0)
      this.logger.info("DHCP reservations brought in line with the store", { written, removed });
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
