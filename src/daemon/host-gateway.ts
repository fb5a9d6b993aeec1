/**
 * Adapts the SSH host layer (`src/hosts`) to what the EIP service (`eip/hosts.ts`) and the leak
 * check (`pool/leaks.ts`) ask of hosts: addresses as numbers there, as dotted quads on the wire.
 */
import type { Convergence, HostGateway, HostMapping } from "../eip/hosts.ts";
import { type Host, type HostRegistry, HostUnavailableError } from "../hosts/index.ts";
import { type Cidr, formatIpv4, isIpv4, parseIpv4 } from "../net/ipv4.ts";
import type { Domain, DomainDirectory } from "../pool/leaks.ts";

export class SshHostGateway implements HostGateway, DomainDirectory {
  constructor(
    private readonly registry: HostRegistry,
    /** The EIP pools' networks: the addresses on a public interface that ippool manages. */
    private readonly eipRanges: readonly Cidr[],
  ) {}

  has(host: string): boolean {
    return this.registry.get(host) !== undefined;
  }

  hostNames(): readonly string[] {
    return this.registry.all().map((host) => host.name);
  }

  async listDomains(host: string): Promise<readonly Domain[]> {
    return this.host(host).libvirt.listDomains();
  }

  instanceState(host: string, instanceId: string): Promise<string | null> {
    return this.host(host).libvirt.instanceState(instanceId);
  }

  async locate(instanceId: string): Promise<{ host: string; state: string } | null> {
    const found = await this.registry.findInstance(instanceId);
    return found && { host: found.host.name, state: found.state };
  }

  instanceUuid(host: string, instanceId: string): Promise<string | null> {
    return this.host(host).libvirt.instanceUuid(instanceId);
  }

  async instanceAddresses(host: string, instanceId: string): Promise<number[]> {
    return (await this.host(host).libvirt.instanceAddresses(instanceId)).filter(isIpv4).map(parseIpv4);
  }

  apply(host: string, association: HostMapping): Promise<void> {
    return this.host(host).nat.applyAssociation(wire(association));
  }

  remove(host: string, eip: number): Promise<void> {
    return this.host(host).nat.removeAssociation(formatIpv4(eip));
  }

  async converge(host: string, desired: readonly HostMapping[]): Promise<Convergence> {
    const result = await this.host(host).nat.converge(desired.map(wire), this.eipRanges);
    return {
      added: result.added.length,
      removed: result.removed.length,
      changed: result.changed.length,
      removedEips: result.removed.map((association) => parseIpv4(association.eip)),
    };
  }

  announce(host: string, eip: number): void {
    this.registry.get(host)?.nat.announce(formatIpv4(eip));
  }

  onConnect(listener: (host: string) => void): void {
    this.registry.onConnect((host) => listener(host.name));
  }

  private host(name: string): Host {
    const host = this.registry.get(name);
    if (!host) throw new HostUnavailableError(`no host named ${name} is configured`);
    return host;
  }
}

function wire(association: HostMapping): { eip: string; privateIp: string } {
  return { eip: formatIpv4(association.eip), privateIp: formatIpv4(association.privateIp) };
}
