/**
 * NatDriver's element changes against a scripted host: it plans from the table as it last left
 * it, and plans again from a fresh read only when nft refuses the transaction (the view was
 * stale), never after a timeout or a lost connection. test/hosts/nat.test.ts runs the driver
 * against real nftables in network namespaces.
 */
import { describe, expect, test } from "bun:test";
import { HostCommandFailedError, HostCommandTimeoutError, HostUnavailableError } from "../../../src/hosts/errors.ts";
import type { ExecOptions, ExecResult } from "../../../src/hosts/exec-channels.ts";
import { type CommandRunner, NatDriver } from "../../../src/hosts/nat.ts";

const EIP = "100.64.0.10";
const OTHER_EIP = "100.64.0.11";
const VM1 = "10.0.0.11";
const VM2 = "10.0.0.12";

/** What `nft` prints for an element, a table or a map that is not there. */
const NO_SUCH_FILE = "Error: Could not process rule: No such file or directory\n";

/**
 * A host with ippool's nft table, enough of nft to apply ippool's transactions atomically (a
 * transaction deleting an element that is not there is refused, as nft refuses it), and every
 * other command succeeding. `nextTransaction` replaces the next `nft -f -`: an error is thrown
 * as a connection throws it (a timeout, a drop), a result is answered as it is.
 */
class ScriptedHost implements CommandRunner {
  readonly name = "hv1";
  /** Every command run, as argv. */
  readonly commands: (readonly string[])[] = [];
  /** null: no table (a host that rebooted). */
  table: { dnat: Map<string, string>; snat: Map<string, string> } | null = emptyTable();
  nextTransaction: Error | ExecResult | null = null;

  /** An operator flushed ippool's maps: the table is intact, the elements are gone. */
  flushMaps(): void {
    this.table = emptyTable();
  }

  /** The host rebooted: no table at all. */
  reboot(): void {
    this.table = null;
  }

  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.commands.push(argv);
    const command = argv.join(" ");
    if (command === "nft -j list table ip ippool") {
      if (!this.table) return { stdout: "", stderr: NO_SUCH_FILE, code: 1 };
      return { stdout: nftJson(this.table.dnat, this.table.snat), stderr: "", code: 0 };
    }
    if (command === "nft -f -") {
      const scripted = this.nextTransaction;
      this.nextTransaction = null;
      if (scripted instanceof Error) throw scripted;
      return scripted ?? this.transaction(options.stdin ?? "");
    }
    return { stdout: "", stderr: "", code: 0 };
  }

  async run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    const result = await this.exec(argv, options);
    if (result.code !== 0) throw this.commandFailed(argv, result);
    return result;
  }

  commandFailed(argv: readonly string[], result: ExecResult): HostCommandFailedError {
    return new HostCommandFailedError(`host hv1: \`${argv.join(" ")}\` exited with status ${result.code}`);
  }

  /** nft commands since the `from`-th command, as text. */
  nftSince(from: number): string[] {
    return this.commands
      .slice(from)
      .map((argv) => argv.join(" "))
      .filter((command) => command.startsWith("nft "));
  }

  private transaction(text: string): ExecResult {
    const next = this.table ? { dnat: new Map(this.table.dnat), snat: new Map(this.table.snat) } : null;
    let table = next;
    for (const line of text.split("\n").filter(Boolean)) {
      if (line === "add table ip ippool") table ??= emptyTable();
      const element = /^(add|delete) element ip ippool (eip_dnat|eip_snat) \{ (\S+)(?: : (\S+))? \}$/.exec(line);
      if (!element) continue; // the table structure: maps, chains, rules
      const [, verb, mapName, key, value] = element as unknown as [string, string, string, string, string];
      if (!table) return { stdout: "", stderr: NO_SUCH_FILE, code: 1 };
      const map = mapName === "eip_dnat" ? table.dnat : table.snat;
      if (verb === "delete" && !map.delete(key)) return { stdout: "", stderr: NO_SUCH_FILE, code: 1 };
      if (verb === "add") map.set(key, value);
    }
    this.table = table;
    return { stdout: "", stderr: "", code: 0 };
  }
}

function emptyTable() {
  return { dnat: new Map<string, string>(), snat: new Map<string, string>() };
}

/** `nft -j list table ip ippool` for an intact table with these elements. */
function nftJson(dnat: Map<string, string>, snat: Map<string, string>): string {
  const map = (name: string, elements: Map<string, string>) => ({
    map: { family: "ip", name, table: "ippool", type: "ipv4_addr", map: "ipv4_addr", elem: [...elements] },
  });
  const chain = (name: string) => ({ chain: { family: "ip", table: "ippool", name, type: "nat", hook: name } });
  const rule = (chainName: string, verb: string, mapName: string) => ({
    rule: {
      family: "ip",
      table: "ippool",
      chain: chainName,
      expr: [{ [verb]: { addr: { map: { data: `@${mapName}` } } } }],
    },
  });
  return JSON.stringify({
    nftables: [
      { table: { family: "ip", name: "ippool" } },
      map("eip_dnat", dnat),
      map("eip_snat", snat),
      chain("prerouting"),
      chain("postrouting"),
      rule("prerouting", "dnat", "eip_dnat"),
      rule("postrouting", "snat", "eip_snat"),
    ],
  });
}

/** A driver that has applied EIP → VM1 on the host (its view of the table is now cached). */
async function driverWithOneAssociation(): Promise<{ host: ScriptedHost; nat: NatDriver }> {
  const host = new ScriptedHost();
  const nat = new NatDriver(host, "eth0");
  await nat.applyAssociation({ eip: EIP, privateIp: VM1 });
  expect(host.nftSince(0)).toEqual(["nft -j list table ip ippool", "nft -f -"]);
  return { host, nat };
}

describe("NatDriver element changes", () => {
  test("the next change is planned from the table the last one left, without reading it again", async () => {
    const { host, nat } = await driverWithOneAssociation();
    const from = host.commands.length;
    await nat.applyAssociation({ eip: OTHER_EIP, privateIp: VM2 });
    expect(host.nftSince(from)).toEqual(["nft -f -"]);
    expect(host.table?.dnat).toEqual(
      new Map([
        [EIP, VM1],
        [OTHER_EIP, VM2],
      ]),
    );
  });

  test("a stale view (elements lost behind ippool's back) is refused by nft, read again and planned again", async () => {
    const { host, nat } = await driverWithOneAssociation();
    host.flushMaps();
    const from = host.commands.length;
    // Planned from the cached view, the move deletes EIP → VM1 first: nft refuses, as the element is gone.
    await nat.applyAssociation({ eip: EIP, privateIp: VM2 });
    expect(host.nftSince(from)).toEqual(["nft -f -", "nft -j list table ip ippool", "nft -f -"]);
    expect(host.table?.dnat).toEqual(new Map([[EIP, VM2]]));
    expect(host.table?.snat).toEqual(new Map([[VM2, EIP]]));
  });

  test("a host whose table is gone (a reboot) gets the table back along with the element", async () => {
    const { host, nat } = await driverWithOneAssociation();
    host.reboot();
    const from = host.commands.length;
    await nat.applyAssociation({ eip: OTHER_EIP, privateIp: VM2 });
    expect(host.nftSince(from)).toEqual(["nft -f -", "nft -j list table ip ippool", "nft -f -"]);
    expect(host.table?.dnat).toEqual(new Map([[OTHER_EIP, VM2]]));
  });

  test('"nothing to do" from the cached view is checked against a fresh read', async () => {
    const { host, nat } = await driverWithOneAssociation();
    host.flushMaps();
    const from = host.commands.length;
    await nat.applyAssociation({ eip: EIP, privateIp: VM1 });
    expect(host.nftSince(from)).toEqual(["nft -j list table ip ippool", "nft -f -"]);
    expect(host.table?.dnat).toEqual(new Map([[EIP, VM1]]));
  });

  test.each([
    ["a timeout", new HostCommandTimeoutError("host hv1: `nft -f -` timed out after 10000 ms")],
    ["a lost connection", new HostUnavailableError("host hv1: connection dropped while running `nft -f -`")],
  ])("%s is not retried: the change fails at once, and the next one reads the table first", async (_, failure) => {
    const { host, nat } = await driverWithOneAssociation();
    host.nextTransaction = failure;
    const from = host.commands.length;
    const error = await nat.applyAssociation({ eip: OTHER_EIP, privateIp: VM2 }).catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(host.nftSince(from)).toEqual(["nft -f -"]);
    // The transaction may or may not have been applied: the view is forgotten.
    const next = host.commands.length;
    await nat.applyAssociation({ eip: OTHER_EIP, privateIp: VM2 });
    expect(host.nftSince(next)).toEqual(["nft -j list table ip ippool", "nft -f -"]);
    expect(host.table?.dnat).toEqual(
      new Map([
        [EIP, VM1],
        [OTHER_EIP, VM2],
      ]),
    );
  });

  test("a refusal of a transaction planned from a fresh read is not retried", async () => {
    const host = new ScriptedHost();
    const nat = new NatDriver(host, "eth0"); // no view yet: the first change reads the table
    host.nextTransaction = { stdout: "", stderr: "Error: Could not process rule: Cannot allocate memory\n", code: 1 };
    const error = await nat.applyAssociation({ eip: EIP, privateIp: VM1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect(error).not.toBeInstanceOf(HostCommandTimeoutError);
    expect(host.nftSince(0)).toEqual(["nft -j list table ip ippool", "nft -f -"]);
    expect(host.table?.dnat).toEqual(new Map());
  });
});
