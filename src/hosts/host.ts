/** One hypervisor host: its SSH connection, its libvirt checks and its NAT driver. */
import type { HostDefinition } from "../config/config.ts";
import type { HostCommandEvents } from "./events.ts";
import type { HostLogger } from "./host-logger.ts";
import { Libvirt } from "./libvirt.ts";
import { type CommandRunner, NatDriver } from "./nat.ts";
import { SshConnection, type SshConnectionOptions } from "./ssh-connection.ts";

/** Connection settings that are not in the config (defaults suit production; tests shorten them). */
export type ConnectionTuning = Pick<
  SshConnectionOptions,
  "keepaliveIntervalMs" | "keepaliveCountMax" | "backoffInitialMs" | "backoffMaxMs" | "maxChannels"
>;

export class Host {
  readonly name: string;
  readonly connection: SshConnection;
  readonly libvirt: Libvirt;
  readonly nat: NatDriver;

  /** `privateKey` is the key file's content (the registry reads and checks it). */
  constructor(
    readonly definition: HostDefinition,
    readonly privateKey: Buffer,
    options: { logger?: HostLogger; tuning?: ConnectionTuning; events?: HostCommandEvents } = {},
  ) {
    this.name = definition.name;
    this.connection = new SshConnection({
      name: definition.name,
      address: definition.address,
      port: definition.port,
      user: definition.user,
      privateKey,
      hostKey: definition.hostKey,
      connectTimeoutMs: definition.connectTimeoutMs,
      commandTimeoutMs: definition.commandTimeoutMs,
      ...options.tuning,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.events ? { events: options.events } : {}),
    });
    this.libvirt = new Libvirt(this.connection, definition.libvirtUri);
    const runner = definition.sudo ? withSudo(this.connection) : this.connection;
    this.nat = new NatDriver(runner, definition.publicInterface, options.logger);
  }

  get connected(): boolean {
    return this.connection.connected;
  }
}

/**
 * For a non-root SSH user: the NAT driver's commands (nft, ip, conntrack, arping) run through
 * `sudo -n`, which fails at once instead of prompting when the sudoers entry is missing.
 */
export function withSudo(runner: CommandRunner): CommandRunner {
  return {
    name: runner.name,
    exec: (argv, options) => runner.exec(["sudo", "-n", ...argv], options),
    run: (argv, options) => runner.run(["sudo", "-n", ...argv], options),
    commandFailed: (argv, result) => runner.commandFailed(["sudo", "-n", ...argv], result),
  };
}
