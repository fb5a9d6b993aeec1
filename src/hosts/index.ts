/** The host driver: SSH connections, libvirt checks and the NAT driver for hypervisor hosts. */
export { buildCommand, quoteArg, validDomain, validInterface, validIpv4, validLibvirtUri } from "./command.ts";
export {
  HostCommandFailedError,
  HostCommandTimeoutError,
  HostConfigError,
  HostKeyMismatchError,
  HostUnavailableError,
  InvalidCommandArgumentError,
} from "./errors.ts";
export { type CommandFailure, commandName, type HostCommandEvents } from "./events.ts";
export type { ExecOptions, ExecResult } from "./exec-channels.ts";
export { hostKeyFingerprint } from "./fingerprint.ts";
export { type ConnectionTuning, Host } from "./host.ts";
export type { HostLogger } from "./host-logger.ts";
export { type InstanceState, Libvirt, type LibvirtDomain, parseDomainList } from "./libvirt.ts";
export { type CommandRunner, type ConvergeResult, NatDriver, type NatState } from "./nat.ts";
export type { Association, ChangedAssociation, RemovedAssociation } from "./nft-plan.ts";
export { type FoundInstance, HostRegistry, type HostRegistryOptions, readPrivateKey } from "./registry.ts";
export { SshConnection } from "./ssh-connection.ts";
