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
import { HostUnavailableError } from "./errors.ts";
import { type ElementChanges, EMPTY_TABLE, nftTransaction, parseAddresses, parseNftTable, TABLE } from "./nft.ts";
import { type Association, isEmptyPlan, type NatPlan, planConvergence } from "./reconcile-diff.ts";
import type { ExecOptions, ExecResult, HostLogger } from "./ssh-connection.ts";

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
      const table = await this.readTable();
      const dnat = new Map(table.dnat.map((a) => [a.eip, a.privateIp]));
      const snat = new Map(table.snat.map((a) => [a.privateIp, a.eip]));
      const changes: ElementChanges = {
        dnatDelete: [...dnat].filter(([e, p]) => (e === eip) !== (p === privateIp)).map(([e]) => e),
        dnatAdd: dnat.get(eip) === privateIp ? [] : [{ eip, privateIp }],
        snatDelete: [...snat].filter(([p, e]) => (p === privateIp) !== (e === eip)).map(([p]) => p),
        snatAdd: snat.get(privateIp) === eip ? [] : [{ eip, privateIp }],
      };
      const changed = hasElementChanges(changes);
      if (changed || !table.intact) await this.transaction(changes, !table.intact);
      // Flows tracked before this mapping (un-NATed, or NATed to another VM) must not keep their old
      // translation; EIPs that pointed at this private IP lost their elements, so their flows go too.
      const flush = changed ? [eip, ...changes.dnatDelete.filter((e) => e !== eip)] : [];
      await Promise.all([this.addAddress(eip), ...flush.map((e) => this.flushConntrack(e))]);
      this.announce(eip);
    });
  }

  /** Removes the EIP's elements (if any), its /32 and its conntrack entries. Idempotent. */
  async removeAssociation(eipText: string): Promise<void> {
    const eip = validIpv4(eipText, "EIP");
    return this.serial(async () => {
      const table = await this.readTable();
      const changes: ElementChanges = {
        dnatDelete: table.dnat.filter((a) => a.eip === eip).map((a) => a.eip),
        dnatAdd: [],
        snatDelete: table.snat.filter((a) => a.eip === eip).map((a) => a.privateIp),
        snatAdd: [],
      };
      if (hasElementChanges(changes)) await this.transaction(changes, false);
      await this.deleteAddress(eip);
      await this.flushConntrack(eip);
    });
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

  private async readTable() {
    const argv = ["nft", "-j", "list", "table", "ip", TABLE];
    const result = await this.host.exec(argv);
    if (result.code !== 0) {
      if (/No such file or directory/.test(result.stderr)) return EMPTY_TABLE;
      throw this.host.commandFailed(argv, result);
    }
    return parseNftTable(result.stdout);
  }

  private async readAddresses(): Promise<string[]> {
    const { stdout } = await this.host.run(["ip", "-j", "-4", "addr", "show", "dev", this.publicInterface]);
    return parseAddresses(stdout);
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
  private announce(eip: string): void {
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

function hasElementChanges(changes: ElementChanges): boolean {
  return changes.dnatDelete.length + changes.dnatAdd.length + changes.snatDelete.length + changes.snatAdd.length > 0;
}
