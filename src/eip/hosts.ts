/**
 * What the EIP service needs from the hypervisor hosts, in its own terms (addresses as
 * uint32). `daemon/` adapts the SSH host layer to it. Failures surface as the host layer's
 * errors: `HOST_UNAVAILABLE` (cannot reach the host) and `HOST_COMMAND_FAILED` (502 both).
 */

/** An EIP and the private address a host forwards it to (the host layer's `Association`, as uint32). */
export interface HostMapping {
  readonly eip: number;
  readonly privateIp: number;
}

/** How many associations converging a host added, removed and changed (the drift it corrected). */
export interface ConvergeCounts {
  readonly added: number;
  readonly removed: number;
  readonly changed: number;
}

/** What converging a host did: the counts, and the EIPs it took off the host (stale associations). */
export interface Convergence extends ConvergeCounts {
  readonly removedEips: readonly number[];
}

export interface HostGateway {
  /** Whether a host of that name is configured. */
  has(host: string): boolean;
  /** libvirt's state of the instance on that host ("running", "paused", …), null if it has no such domain. */
  instanceState(host: string, instanceId: string): Promise<string | null>;
  /** Asks every reachable host in parallel; throws HOST_UNAVAILABLE when no host could be asked. */
  locate(instanceId: string): Promise<{ host: string; state: string } | null>;
  /** The instance's UUID as libvirt knows it (lower case, dashed), null if the host has no such domain. */
  instanceUuid(host: string, instanceId: string): Promise<string | null>;
  /** IPv4 addresses libvirt reports for the instance (may be empty). */
  instanceAddresses(host: string, instanceId: string): Promise<number[]>;
  /** Installs the association on the host (idempotent). */
  apply(host: string, association: HostMapping): Promise<void>;
  /** Removes whatever the host has for this EIP (idempotent). */
  remove(host: string, eip: number): Promise<void>;
  /** Makes the host's ippool rules exactly `desired`, in one transaction. */
  converge(host: string, desired: readonly HostMapping[]): Promise<Convergence>;
  /** Announces (gratuitous ARP) that the host holds the EIP; not awaited, failures only logged. */
  announce(host: string, eip: number): void;
  /** Calls `listener` each time a host's connection comes up (first connect and every reconnect). */
  onConnect(listener: (host: string) => void): void;
  hostNames(): readonly string[];
}
