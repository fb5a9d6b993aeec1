/** Instance checks on a host with `virsh -c <uri> ...`, run over the host's SSH connection. */
import { validDomain, validLibvirtUri } from "./command.ts";
import { HostCommandFailedError } from "./errors.ts";
import type { CommandRunner } from "./nat.ts";

/** libvirt's domain states as `virsh domstate` prints them. */
export type InstanceState =
  | "running"
  | "idle"
  | "paused"
  | "in shutdown"
  | "shut off"
  | "crashed"
  | "pmsuspended"
  | "no state"
  | (string & {});

/** A libvirt domain as `virsh list` names it. */
export interface LibvirtDomain {
  readonly name: string;
  /** Lower-case, with dashes, as virsh prints it. */
  readonly uuid: string;
}

/** Every state `virsh domstate` prints (virshDomainStateToString). */
const STATES: ReadonlySet<string> = new Set([
  "running",
  "idle",
  "paused",
  "in shutdown",
  "shut off",
  "crashed",
  "pmsuspended",
  "no state",
]);

/** virsh's message for a domain that does not exist (same for the qemu and test drivers). */
const NO_DOMAIN = /failed to get domain|Domain not found/i;

export class Libvirt {
  readonly uri: string;

  constructor(
    private readonly host: CommandRunner,
    uri: string,
  ) {
    this.uri = validLibvirtUri(uri);
  }

  /** The domain's state, or null when the host has no such domain. `instance` is a name or UUID. */
  async instanceState(instance: string): Promise<InstanceState | null> {
    const argv = ["virsh", "-c", this.uri, "domstate", validDomain(instance)];
    const result = await this.host.exec(argv);
    if (result.code !== 0) {
      if (NO_DOMAIN.test(result.stderr)) return null;
      throw this.host.commandFailed(argv, result);
    }
    const state = result.stdout.trim().split("\n")[0]?.trim() ?? "";
    // Anything else is a broken host or virsh, not an instance that is "not running".
    if (!STATES.has(state)) {
      const shown = state ? `an unknown state ${JSON.stringify(state.slice(0, 40))}` : "no state";
      throw this.host.commandFailed(argv, { ...result, stderr: `virsh printed ${shown}` });
    }
    return state;
  }

  /** The domain's UUID, or null when the host has no such domain. */
  async instanceUuid(instance: string): Promise<string | null> {
    const argv = ["virsh", "-c", this.uri, "domuuid", validDomain(instance)];
    const result = await this.host.exec(argv);
    if (result.code !== 0) {
      if (NO_DOMAIN.test(result.stderr)) return null;
      throw this.host.commandFailed(argv, result);
    }
    return result.stdout.trim() || null;
  }

  /**
   * Every domain the host defines, running or not (`virsh list --all --uuid --name`). Throws
   * `HostCommandFailedError` when virsh fails (or prints a line it cannot read): an incomplete
   * list must never pass for a complete one.
   */
  async listDomains(): Promise<LibvirtDomain[]> {
    const argv = ["virsh", "-c", this.uri, "list", "--all", "--uuid", "--name"];
    const result = await this.host.exec(argv);
    if (result.code !== 0) throw this.host.commandFailed(argv, result);
    const domains = parseDomainList(result.stdout);
    if (typeof domains === "string") {
      throw new HostCommandFailedError(
        `host ${this.host.name}: \`virsh -c ${this.uri} list --all --uuid --name\` printed a line that is not "UUID NAME": ${JSON.stringify(domains.slice(0, 120))}`,
      );
    }
    return domains;
  }

  /**
   * The IPv4 addresses libvirt's DHCP leases give the domain (`domifaddr --source lease`); empty
   * when the domain is missing, not running, or has no lease (the test driver often has none).
   */
  async instanceAddresses(instance: string): Promise<string[]> {
    const argv = ["virsh", "-c", this.uri, "domifaddr", validDomain(instance), "--source", "lease"];
    const result = await this.host.exec(argv);
    if (result.code !== 0) {
      if (NO_DOMAIN.test(result.stderr) || /not running|Failed to query/i.test(result.stderr)) return [];
      throw this.host.commandFailed(argv, result);
    }
    return parseDomifaddr(result.stdout);
  }
}

const UUID_LINE = /^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})[ \t]+(\S.*)$/;

/**
 * The domains in `virsh list --all --uuid --name` output: one `UUID NAME` line each (blank lines
 * skipped). Any other line is returned instead, as a string: what it stood for is unknown.
 */
export function parseDomainList(output: string): LibvirtDomain[] | string {
  const domains: LibvirtDomain[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    const match = UUID_LINE.exec(line);
    if (!match) return line;
    domains.push({ uuid: (match[1] as string).toLowerCase(), name: (match[2] as string).trim() });
  }
  return domains;
}

/** The IPv4 addresses (without prefix length) in `virsh domifaddr` output. */
export function parseDomifaddr(output: string): string[] {
  const addresses: string[] = [];
  for (const line of output.split("\n")) {
    const match = /\sipv4\s+(\d{1,3}(?:\.\d{1,3}){3})\/\d{1,2}\s*$/.exec(line);
    if (match) addresses.push(match[1] as string);
  }
  return addresses;
}
