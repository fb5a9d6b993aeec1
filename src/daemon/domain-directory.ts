/** Adapts the SSH host layer (`src/hosts`) to what the leak check asks of hosts (`pool/leaks.ts`). */
import { type HostRegistry, HostUnavailableError } from "../hosts/index.ts";
import type { Domain, DomainDirectory } from "../pool/leaks.ts";

export class SshDomainDirectory implements DomainDirectory {
  constructor(private readonly registry: HostRegistry) {}

  hostNames(): readonly string[] {
    return this.registry.all().map((host) => host.name);
  }

  listDomains(name: string): Promise<readonly Domain[]> {
    const host = this.registry.get(name);
    if (!host) return Promise.reject(new HostUnavailableError(`no host named ${name} is configured`));
    return host.libvirt.listDomains();
  }
}
