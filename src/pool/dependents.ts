/**
 * What else points at a VM's address. An elastic IP's DNAT targets it, so the address may be freed
 * (and handed to another VM) only once that association is gone: the EIP service detaches it first
 * and holds the VM so no new association starts until the release is written.
 */
export interface AddressDependents {
  /** Detaches whatever points at these VMs' addresses, then runs `release` while holding them detached. */
  releasing<T>(vmIds: readonly string[], release: () => Promise<T>): Promise<T>;
}

export const NO_ADDRESS_DEPENDENTS: AddressDependents = {
  releasing: (_vmIds, release) => release(),
};
