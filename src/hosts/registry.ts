/**
 * All configured hypervisor hosts. Built at start (checking each private key file), connected in
 * the background (start never waits for a host), changed by a reload, closed at shutdown.
 */
import { readFileSync, statSync } from "node:fs";
import { utils } from "ssh2";
import type { HostDefinition } from "../config/config.ts";
import { validDomain } from "./command.ts";
import { HostConfigError, HostUnavailableError } from "./errors.ts";
import type { HostCommandEvents } from "./events.ts";
import { type ConnectionTuning, Host } from "./host.ts";
import type { HostLogger } from "./host-logger.ts";
import type { InstanceState } from "./libvirt.ts";

export interface FoundInstance {
  readonly host: Host;
  readonly state: InstanceState;
}

export interface HostRegistryOptions {
  readonly logger?: HostLogger;
  readonly tuning?: ConnectionTuning;
  /** Told about every command each host runs (metrics). */
  readonly events?: HostCommandEvents;
}

/** What a reload did to the hosts, by name. */
export interface HostChanges {
  readonly added: readonly string[];
  readonly changed: readonly string[];
  readonly removed: readonly string[];
}

export class HostRegistry {
  private hosts = new Map<string, Host>();
  private readonly connectListeners: ((host: Host) => void)[] = [];
  private started = false;

  /** Reads and checks every private key file now; throws `HostConfigError` naming `hosts[i].private_key`. */
  constructor(
    definitions: readonly HostDefinition[],
    private readonly options: HostRegistryOptions = {},
  ) {
    for (const [name, entry] of this.prepare(definitions)) this.hosts.set(name, this.build(entry));
  }

  /** Starts connecting every host in the background; returns at once. */
  start(): void {
    this.started = true;
    for (const host of this.hosts.values()) host.connection.start();
  }

  /** Calls `listener` whenever a host connects or reconnects, hosts added later included. */
  onConnect(listener: (host: Host) => void): void {
    this.connectListeners.push(listener);
    for (const host of this.hosts.values()) host.connection.onConnect(() => listener(host));
  }

  /**
   * Makes the hosts these definitions (a reload): new ones are added and start connecting, removed
   * ones are closed (their running commands fail as unavailable), and one whose settings or key
   * file changed is closed and connected anew. Every key file is read and checked before anything
   * changes: a bad one throws `HostConfigError` and leaves the hosts as they were.
   */
  async update(definitions: readonly HostDefinition[]): Promise<HostChanges> {
    const next = this.prepare(definitions);
    const added: string[] = [];
    const changed: string[] = [];
    const kept = new Map<string, Host>();
    const closing: Host[] = [];
    for (const [name, entry] of next) {
      const current = this.hosts.get(name);
      if (current && sameHost(current, entry)) {
        kept.set(name, current);
        continue;
      }
      if (current) closing.push(current);
      (current ? changed : added).push(name);
      const host = this.build(entry);
      kept.set(name, host);
      if (this.started) host.connection.start();
    }
    const removed = [...this.hosts.keys()].filter((name) => !next.has(name));
    for (const name of removed) closing.push(this.hosts.get(name) as Host);
    this.hosts = kept;
    await Promise.all(closing.map((host) => host.connection.close()));
    return { added, changed, removed };
  }

  private prepare(definitions: readonly HostDefinition[]): Map<string, PreparedHost> {
    return new Map(
      definitions.map((definition, i) => [
        definition.name,
        { definition, key: readPrivateKey(definition.privateKeyPath, `hosts[${i}].private_key`) },
      ]),
    );
  }

  private build({ definition, key }: PreparedHost): Host {
    const { logger, tuning, events } = this.options;
    const host = new Host(definition, key, {
      ...(logger ? { logger } : {}),
      ...(tuning ? { tuning } : {}),
      ...(events ? { events } : {}),
    });
    for (const listener of this.connectListeners) host.connection.onConnect(() => listener(host));
    return host;
  }

  get(name: string): Host | undefined {
    return this.hosts.get(name);
  }

  all(): Host[] {
    return [...this.hosts.values()];
  }

  /**
   * Which host has the libvirt domain `instance` (name or UUID), asking every connected host in
   * parallel. A host that is down or fails to answer is skipped; if no host could be asked at all
   * (and there are hosts), that is a `HostUnavailableError`. When several hosts know the domain, a
   * running one wins, so the first host to report it running answers at once: a slow or hung host
   * delays only lookups it could change.
   */
  async findInstance(instance: string): Promise<FoundInstance | null> {
    validDomain(instance);
    const hosts = this.all();
    if (hosts.length === 0) return null;
    let runningOn: (found: FoundInstance) => void = () => {};
    const running = new Promise<FoundInstance>((resolve) => {
      runningOn = resolve;
    });
    const all = Promise.all(
      hosts.map(async (host) => {
        // A host still on its first attempt (the daemon just started) is asked: the command waits for it.
        if (!host.connected && !host.connection.startingUp) return { host, asked: false, state: null };
        try {
          const state = await host.libvirt.instanceState(instance);
          if (state === "running") runningOn({ host, state });
          return { host, asked: true, state };
        } catch {
          return { host, asked: false, state: null };
        }
      }),
    );
    const answers = await Promise.race([all, running]);
    if (!Array.isArray(answers)) return answers;
    const found = answers.filter((a): a is { host: Host; asked: true; state: InstanceState } => a.state !== null);
    const best = found.find((a) => a.state === "running") ?? found[0];
    if (best) return { host: best.host, state: best.state };
    if (!answers.some((a) => a.asked)) {
      throw new HostUnavailableError(
        `cannot look up instance ${instance}: no host could be asked (${hosts.map((h) => h.name).join(", ")} unreachable)`,
      );
    }
    return null;
  }

  /** Closes every connection (no reconnects afterwards). */
  async close(): Promise<void> {
    await Promise.all(this.all().map((host) => host.connection.close()));
  }
}

interface PreparedHost {
  readonly definition: HostDefinition;
  /** The private key file's content, read and checked. */
  readonly key: Buffer;
}

/** Nothing to reconnect for: the same settings and the same key. */
function sameHost(host: Host, { definition, key }: PreparedHost): boolean {
  return JSON.stringify(host.definition) === JSON.stringify(definition) && host.privateKey.equals(key);
}

/** The key file's content, if it exists, is a regular file no one but the owner can read, and parses as a private key. */
export function readPrivateKey(path: string, key: string): Buffer {
  let mode: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new HostConfigError(`${key}: ${path} is not a regular file`);
    mode = stat.mode & 0o777;
  } catch (error) {
    if (error instanceof HostConfigError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new HostConfigError(`${key}: ${path} ${code === "ENOENT" ? "does not exist" : `cannot be read (${code})`}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new HostConfigError(
      `${key}: ${path} has mode 0${mode.toString(8)}; a private key must be mode 0600 (chmod 600 ${path})`,
    );
  }
  let content: Buffer;
  try {
    content = readFileSync(path);
  } catch (error) {
    throw new HostConfigError(`${key}: ${path} cannot be read (${(error as NodeJS.ErrnoException).code})`);
  }
  const parsed = utils.parseKey(content);
  if (parsed instanceof Error)
    throw new HostConfigError(`${key}: ${path} is not a usable private key (${parsed.message})`);
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!first?.isPrivateKey()) throw new HostConfigError(`${key}: ${path} holds no private key`);
  return content;
}
