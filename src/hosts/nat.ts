/**
 * The NAT driver: puts elastic-IP associations on a host with nftables (see `nft.ts` for the
 * table), the EIP as a /32 on the public interface, conntrack flushes and a gratuitous ARP.
 *
 * Every element change is one atomic `nft -f -` transaction built from the state read just before
 * (nftables 1.0.6 has no "delete if present"). Operations on one host are serialised so a read and
 * the transaction built from it are never interleaved with another change.
 */
import { type Cidr, cidrContains, parseIpv4 } from "../net/ipv4.ts";
import { validInterface, validIpv4 } from "./command.ts";
import { HostCommandFailedError, HostCommandTimeoutError, HostUnavailableError } from "./errors.ts";
import type { ExecOptions, ExecResult } from "./exec-channels.ts";
import type { HostLogger } from "./host-logger.ts";
import {
  type ElementChanges,
  EMPTY_TABLE,
  type NftTableState,
  nftTransaction,
  parseAddresses,
  parseNftTable,
  TABLE,
} from "./nft.ts";
import { type Association, isEmptyPlan, type NatPlan, planConvergence } from "./nft-plan.ts";

/** What the driver needs from a connection (an `SshConnection`, or a fake in tests). */
export interface CommandRunner {
  readonly name: string;
  exec(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  commandFailed(argv: readonly string[], result: ExecResult): Error;
}

/** The host's NAT state as read from it. */
export interface NatState {
  /** Elements of eip_dnat: the associations the host applies to incoming traffic. */
  readonly associations: Association[];
  /** Elements of eip_snat (private IP → EIP), as associations. */
  readonly snat: Association[];
  /** /32 addresses on the public interface (inside the EIP ranges, when ranges were given). */
  readonly addresses: string[];
  /** The table exists. */
  readonly tableExists: boolean;
  /** Maps, chains and the two rules are all as ippool writes them. */
  readonly tableIntact: boolean;
}

export interface ConvergeResult {
  readonly added: NatPlan["added"];
  readonly removed: NatPlan["removed"];
  readonly changed: NatPlan["changed"];
}

/** `conntrack -D` exits 1 when nothing matched. */
const NOTHING_DELETED = /\b0 flow entries have been deleted/;
/** `ip addr del` of an address that is not there (new and old iproute2 wording). */
const ADDRESS_ABSENT = /Address not found|Cannot assign requested address/;

export class NatDriver {
  private queue: Promise<unknown> = Promise.resolve();
  /** The table as ippool's last read or transaction left it; null when it must be read again. */
  private known: NftTableState | null = null;
  private readonly publicInterface: string;

  constructor(
    private readonly host: CommandRunner,
    publicInterface: string,
    private readonly logger?: HostLogger,
  ) {
    this.publicInterface = validInterface(publicInterface);
  }

  /**
   * Makes `eip` reach `privateIp` on this host (DNAT) and `privateIp` leave as `eip` (SNAT),
   * replacing any element that maps either address elsewhere; adds the EIP /32, flushes conntrack
   * entries for it, and starts a gratuitous ARP without waiting for it (it takes about a second).
   */
  async applyAssociation(association: Association): Promise<void> {
    const eip = validIpv4(association.eip, "EIP");
    const privateIp = validIpv4(association.privateIp, "private IP");
    return this.serial(async () => {
      const changes = await this.changeElements((table) => {
        const dnat = new Map(table.dnat.map((a) => [a.eip, a.privateIp]));
        const snat = new Map(table.snat.map((a) => [a.privateIp, a.eip]));
        return {
          dnatDelete: [...dnat].filter(([e, p]) => (e === eip) !== (p === privateIp)).map(([e]) => e),
          dnatAdd: dnat.get(eip) === privateIp ? [] : [{ eip, privateIp }],
          snatDelete: [...snat].filter(([p, e]) => (p === privateIp) !== (e === eip)).map(([p]) => p),
          snatAdd: snat.get(privateIp) === eip ? [] : [{ eip, privateIp }],
        };
      }, this.addAddress(eip));
      // Traffic may come now: announce first, then drop flows tracked before this mapping (un-NATed,
      // or NATed to another VM) and those of EIPs that pointed at this private IP (they lost their
      // elements); packets caught in between are re-tracked with the new mapping.
      this.announce(eip);
      const flush = hasElementChanges(changes) ? [eip, ...changes.dnatDelete.filter((e) => e !== eip)] : [];
      await Promise.all(flush.map((e) => this.flushConntrack(e)));
    });
  }

  /** Removes the EIP's elements (if any), its /32 and its conntrack entries. Idempotent. */
  async removeAssociation(eipText: string): Promise<void> {
    const eip = validIpv4(eipText, "EIP");
    return this.serial(async () => {
      await this.changeElements(
        (table) => ({
          dnatDelete: table.dnat.filter((a) => a.eip === eip).map((a) => a.eip),
          dnatAdd: [],
          snatDelete: table.snat.filter((a) => a.eip === eip).map((a) => a.privateIp),
          snatAdd: [],
        }),
        this.deleteAddress(eip),
        false,
      );
      await this.flushConntrack(eip);
    });
  }

  /**
   * Computes element changes from the table as last seen (read fresh when not known) and applies
   * them, alongside `alongside` (the address change, which does not depend on the table). The
   * table is ippool's alone, so the state left by its own last transaction is normally current;
   * if the host changed behind its back (a reboot, an operator) the transaction fails, and it is
   * planned again from a fresh read. Saves a round trip on every association.
   */
  private async changeElements(
    plan: (table: NftTableState) => ElementChanges,
    alongside: Promise<void>,
    repairStructure = true,
  ): Promise<ElementChanges> {
    const settled = alongside.then(
      () => null,
      (error: unknown) => error,
    );
    let changes: ElementChanges = plan(EMPTY_TABLE);
    for (let attempt = 0; attempt < 2; attempt++) {
      const cached = attempt === 0 ? this.known : null;
      const table = cached ?? (await this.readTable());
      changes = plan(table);
      const ensure = repairStructure && !table.intact;
      if (!hasElementChanges(changes) && !ensure) {
        // "Nothing to do" is only trusted from a fresh read: a stale view could hide a lost element.
        if (cached) continue;
        break;
      }
      try {
        await this.transaction(changes, ensure);
        this.known = afterChanges(table, changes, ensure);
        break;
      } catch (error) {
        this.known = null;
        // Only nft refusing the transaction says the view was stale; a timeout or a lost
        // connection says nothing about it, and trying again would only double the wait.
        if (!cached || !refused(error)) throw error;
      }
    }
    const failure = await settled;
    if (failure) throw failure;
    return changes;
  }

  /**
   * Reads the table and the public interface. With `eipRanges`, only /32s inside them are reported
   * (the interface also carries the host's own addresses).
   */
  async readState(eipRanges?: readonly Cidr[]): Promise<NatState> {
    const [table, addresses] = await Promise.all([this.readTable(), this.readAddresses()]);
    const inRanges = (ip: string) => !eipRanges || eipRanges.some((cidr) => cidrContains(cidr, parseIpv4(ip)));
    return {
      associations: table.dnat,
      snat: table.snat,
      addresses: addresses.filter(inRanges),
      tableExists: table.exists,
      tableIntact: table.intact,
    };
  }

  /**
   * Converges the host to exactly `desired`: one nft transaction for all element changes (and the
   * table structure if it was damaged or missing), then address adds/deletes, conntrack flushes for
   * removed and changed EIPs, and gratuitous ARPs for EIPs that (re)appeared.
   */
  async converge(desired: readonly Association[], eipRanges: readonly Cidr[]): Promise<ConvergeResult> {
    for (const a of desired) {
      validIpv4(a.eip, "EIP");
      validIpv4(a.privateIp, "private IP");
    }
    return this.serial(async () => {
      const state = await this.readState(eipRanges);
      const plan = planConvergence(
        desired,
        { dnat: state.associations, snat: state.snat, addresses: state.addresses },
        eipRanges,
      );
      if (isEmptyPlan(plan) && (state.tableIntact || (!state.tableExists && desired.length === 0))) {
        return { added: [], removed: [], changed: [] };
      }
      const structural = !state.tableIntact && (state.tableExists || desired.length > 0);
      if (hasElementChanges(plan) || structural) await this.transaction(plan, !state.tableIntact);
      await this.changeAddresses(plan.addressAdd, plan.addressDelete);
      await Promise.all(plan.conntrackFlush.map((eip) => this.flushConntrack(eip)));
      for (const eip of new Set([...plan.addressAdd, ...plan.changed.map((c) => c.eip)])) this.announce(eip);
      if (plan.added.length + plan.removed.length + plan.changed.length > 0) {
        this.logger?.info("host NAT converged", {
          host: this.host.name,
          added: plan.added.length,
          removed: plan.removed.length,
          changed: plan.changed.length,
        });
      }
      return { added: plan.added, removed: plan.removed, changed: plan.changed };
    });
  }

  private async readTable(): Promise<NftTableState> {
    const argv = ["nft", "-j", "list", "table", "ip", TABLE];
    const result = await this.host.exec(argv);
    if (result.code !== 0) {
      if (/No such file or directory/.test(result.stderr)) return this.remember(EMPTY_TABLE);
      throw this.host.commandFailed(argv, result);
    }
    return this.remember(parsed(this.host, argv, result, parseNftTable));
  }

  private remember(table: NftTableState): NftTableState {
    this.known = table;
    return table;
  }

  private async readAddresses(): Promise<string[]> {
    const argv = ["ip", "-j", "-4", "addr", "show", "dev", this.publicInterface];
    return parsed(this.host, argv, await this.host.run(argv), parseAddresses);
  }

  private async transaction(changes: ElementChanges, ensure: boolean): Promise<void> {
    await this.host.run(["nft", "-f", "-"], { stdin: nftTransaction(changes, ensure) });
  }

  private async addAddress(eip: string): Promise<void> {
    await this.host.run(["ip", "-4", "addr", "replace", `${eip}/32`, "dev", this.publicInterface]);
  }

  private async deleteAddress(eip: string): Promise<void> {
    const argv = ["ip", "-4", "addr", "del", `${eip}/32`, "dev", this.publicInterface];
    const result = await this.host.exec(argv);
    if (result.code !== 0 && !ADDRESS_ABSENT.test(result.stderr)) throw this.host.commandFailed(argv, result);
  }

  /** All address changes in one `ip -batch -` run; deleting an address that is already gone is fine. */
  private async changeAddresses(add: readonly string[], remove: readonly string[]): Promise<void> {
    if (add.length + remove.length === 0) return;
    const dev = this.publicInterface;
    const lines = [
      ...remove.map((eip) => `address del ${validIpv4(eip)}/32 dev ${dev}`),
      ...add.map((eip) => `address replace ${validIpv4(eip)}/32 dev ${dev}`),
    ];
    const argv = ["ip", "-4", "-force", "-batch", "-"];
    const result = await this.host.exec(argv, { stdin: `${lines.join("\n")}\n` });
    if (result.code === 0) return;
    const errors = result.stderr.split("\n").filter((line) => line.trim() && !/^Command failed/.test(line));
    if (errors.length === 0 || !errors.every((line) => ADDRESS_ABSENT.test(line))) {
      throw this.host.commandFailed(argv, result);
    }
  }

  /** Deletes conntrack entries to the EIP (DNAT'd flows) and replied to it (SNAT'd flows). */
  private async flushConntrack(eip: string): Promise<void> {
    await Promise.all(
      [
        ["conntrack", "-D", "-d", eip],
        ["conntrack", "-D", "-q", eip],
      ].map(async (argv) => {
        const result = await this.host.exec(argv);
        if (result.code !== 0 && !NOTHING_DELETED.test(result.stderr)) throw this.host.commandFailed(argv, result);
      }),
    );
  }

  /** Gratuitous ARP for the EIP; not awaited (about 1 s), failures only logged. */
  announce(eipText: string): void {
    const eip = validIpv4(eipText, "EIP");
    this.host
      .run(["arping", "-c", "1", "-U", "-I", this.publicInterface, eip], { timeoutMs: 10_000 })
      .catch((error: Error) => {
        // A connection closed at shutdown or dropped meanwhile is reported by the connection itself.
        const level = error instanceof HostUnavailableError ? "debug" : "warn";
        this.logger?.[level]("gratuitous ARP failed", { host: this.host.name, eip, error: error.message });
      });
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }
}

/** A command that ran and exited non-zero (not one that timed out or lost its connection). */
function refused(error: unknown): boolean {
  return error instanceof HostCommandFailedError && !(error instanceof HostCommandTimeoutError);
}

/** Output a host printed, parsed; output that does not parse is the command failing, never a crash. */
function parsed<T>(host: CommandRunner, argv: string[], result: ExecResult, parse: (text: string) => T): T {
  try {
    return parse(result.stdout);
  } catch {
    throw host.commandFailed(argv, { ...result, stdout: "", stderr: "printed output that cannot be read" });
  }
}

function hasElementChanges(changes: ElementChanges): boolean {
  return changes.dnatDelete.length + changes.dnatAdd.length + changes.snatDelete.length + changes.snatAdd.length > 0;
}

/** The table after a successful transaction of `changes` on `table` (deletes first, as nftTransaction orders them). */
function afterChanges(table: NftTableState, changes: ElementChanges, ensured: boolean): NftTableState {
  const dnat = table.dnat.filter((a) => !changes.dnatDelete.includes(a.eip)).concat(changes.dnatAdd);
  const snat = table.snat.filter((a) => !changes.snatDelete.includes(a.privateIp)).concat(changes.snatAdd);
  return { exists: true, intact: table.intact || ensured, dnat, snat };
}
