/**
 * How an allocated address reaches its VM: a DHCP reservation for the allocation's NIC, put in
 * effect after the allocation is committed and before it is answered (so before the guest's first
 * DHCP request: the hook's `prepare` runs before QEMU starts), and withdrawn after a release.
 */
import type { Nic } from "../dhcp/link.ts";
import type { Allocation } from "./allocator.ts";

export interface AddressDelivery {
  /** Makes the allocation's NIC receive its address (and no longer `replaced`'s, a NIC it had before). */
  deliver(allocation: Allocation, replaced?: Allocation): Promise<void>;
  /** Takes the released allocation's reservation back (failures are logged, never thrown). */
  withdraw(allocation: Allocation): Promise<void>;
  /** The address the NIC holds now (its current lease), for a running VM adopted as it is. */
  currentAddress(nic: Nic): number | undefined;
}

export const NO_DELIVERY: AddressDelivery = {
  deliver: async () => {},
  withdraw: async () => {},
  currentAddress: () => undefined,
};
