/**
 * Association, disassociation and reconciliation over a real store, with the hosts replaced by
 * a scripted gateway (the SSH layer has its own suites in test/hosts).
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { ProjectDefinition } from "../../../src/config/config.ts";
import { EipAssociations } from "../../../src/eip/association.ts";
import type { Convergence, HostGateway, HostMapping } from "../../../src/eip/hosts.ts";
import { KeyedLocks } from "../../../src/eip/locks.ts";
import { EipReconciler } from "../../../src/eip/reconcile.ts";
import type { EipService } from "../../../src/eip/service.ts";
import { AppError } from "../../../src/errors.ts";
import { Logger } from "../../../src/log/logger.ts";
import { formatIpv4, parseIpv4 } from "../../../src/net/ipv4.ts";
import type { PoolLayout } from "../../../src/pool/layout.ts";
import type { PoolService } from "../../../src/pool/service.ts";
import type { PostgresStore } from "../../../src/store/postgres/store.ts";
import type { StepStore } from "../../../src/store/steps.ts";
import { backendPerTest, STORE_BACKENDS } from "../../support/store-backends.ts";
import { servicesOver } from "../../support/store-fixture.ts";

class HostDown extends AppError {
  readonly status = 502;
  readonly code = "HOST_UNAVAILABLE";
}
class CommandFailed extends AppError {
  readonly status = 502;
  readonly code = "HOST_COMMAND_FAILED";
}

/** Hosts as a table: which instances each runs, which associations it holds, which are down. */
class ScriptedHosts implements HostGateway {
  readonly instances = new Map<string, Map<string, { state: string; addresses: number[] }>>();
  readonly rules = new Map<string, Map<number, number>>();
  readonly down = new Set<string>();
  readonly failing = new Set<string>();
  /** How long applying an association takes (a host command's round trip). */
  applyDelayMs = 0;
  /** Gratuitous ARPs asked for: "host EIP". */
  readonly announced: string[] = [];
  private readonly listeners: ((host: string) => void)[] = [];

  constructor(hosts: string[]) {
    for (const host of hosts) {
      this.instances.set(host, new Map());
      this.rules.set(host, new Map());
    }
  }
  readonly uuids = new Map<string, string>();
  run(host: string, instance: string, state = "running", addresses: string[] = []) {
    this.instances.get(host)?.set(instance, { state, addresses: addresses.map(parseIpv4) });
  }
  /** Makes `uuid` a second name of the instance `name` on that host, as libvirt's UUIDs are. */
  alias(host: string, name: string, uuid: string) {
    const instances = this.instances.get(host);
    const found = instances?.get(name);
    if (found) instances?.set(uuid, found);
    this.uuids.set(name, uuid).set(uuid, uuid);
  }
  private reach(host: string): void {
    if (this.down.has(host)) throw new HostDown(`${host} is unreachable`);
  }
  has(host: string) {
    return this.instances.has(host);
  }
  hostNames() {
    return [...this.instances.keys()];
  }
  async instanceState(host: string, instance: string) {
    this.reach(host);
    return this.instances.get(host)?.get(instance)?.state ?? null;
  }
  async locate(instance: string) {
    const up = this.hostNames().filter((h) => !this.down.has(h));
    if (up.length === 0) throw new HostDown("no host reachable");
    for (const host of up) {
      const found = this.instances.get(host)?.get(instance);
      if (found) return { host, state: found.state };
    }
    return null;
  }
  async instanceUuid(host: string, instance: string) {
    this.reach(host);
    return this.instances.get(host)?.has(instance) ? (this.uuids.get(instance) ?? null) : null;
  }
  async instanceAddresses(host: string, instance: string) {
    this.reach(host);
    return this.instances.get(host)?.get(instance)?.addresses ?? [];
  }
  async apply(host: string, association: HostMapping) {
    this.reach(host);
    if (this.applyDelayMs > 0) await Bun.sleep(this.applyDelayMs);
    if (this.failing.has(host)) throw new CommandFailed("nft failed");
    this.rules.get(host)?.set(association.eip, association.privateIp);
  }
  async remove(host: string, eip: number) {
    this.reach(host);
    this.rules.get(host)?.delete(eip);
  }
  async converge(host: string, desired: readonly HostMapping[]): Promise<Convergence> {
    this.reach(host);
    const rules = this.rules.get(host) as Map<number, number>;
    const wanted = new Map(desired.map((a) => [a.eip, a.privateIp]));
    let added = 0;
    let changed = 0;
    const removedEips: number[] = [];
    for (const eip of rules.keys()) {
      if (wanted.has(eip)) continue;
      rules.delete(eip);
      removedEips.push(eip);
    }
    for (const [eip, ip] of wanted) {
      if (!rules.has(eip)) added++;
      else if (rules.get(eip) !== ip) changed++;
      rules.set(eip, ip);
    }
    return { added, removed: removedEips.length, changed, removedEips };
  }
  announce(host: string, eip: number) {
    this.announced.push(`${host} ${formatIpv4(eip)}`);
  }
  onConnect(listener: (host: string) => void) {
    this.listeners.push(listener);
  }
  reconnect(host: string) {
    this.down.delete(host);
    for (const listener of this.listeners) listener(host);
  }
  rulesOf(host: string): Record<string, string> {
    return Object.fromEntries([...(this.rules.get(host) ?? [])].map(([e, p]) => [formatIpv4(e), formatIpv4(p)]));
  }
}

const acme: ProjectDefinition = { name: "acme", apiKeySha256: "0".repeat(64), quota: 10 };
const globex: ProjectDefinition = { name: "globex", apiKeySha256: "1".repeat(64), quota: 10 };

let store: StepStore;
let publicPool: PoolLayout;
let hosts: ScriptedHosts;
let pools: PoolService;
let eips: EipService;
let associations: EipAssociations;
let reconciler: EipReconciler;
const logged: string[] = [];
let logger: Logger;

/** Log lines so far (the logger buffers until the end of the event-loop turn). */
function logs(): string[] {
  logger.flush();
  return logged;
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as AppError).code;
  }
  return "no error";
}

async function vmOn(host: string, vmId: string, state = "running") {
  hosts.run(host, vmId, state);
  return (await pools.allocate({ vmId, host })).allocation;
}

for (const backend of STORE_BACKENDS) {
  describe(`${backend} store`, () => {
    const stores = backendPerTest(backend, async (opened) => {
      store = opened;
      ({ pools, eips, publicPool } = await servicesOver(store));
      hosts = new ScriptedHosts(["hv1", "hv2"]);
      logger = new Logger("text", "debug", (text) => logged.push(...text.trimEnd().split("\n")));
      const locks = new KeyedLocks();
      associations = new EipAssociations(store, hosts, pools, locks, logger);
      reconciler = new EipReconciler(store, hosts, locks, logger);
      logged.length = 0;
    });

    afterEach(() => {
      reconciler.stop();
    });

    if (backend === "postgres") {
      describe("two daemons of a fleet", () => {
        /** Another daemon's associations over the same database and hosts, with its own locks. */
        async function otherDaemon(): Promise<EipAssociations> {
          const other = stores.another("hv-b") as PostgresStore;
          const services = await servicesOver(other);
          return new EipAssociations(other, hosts, services.pools, other.eipLocks(), logger);
        }

        test("associating one EIP with two instances at once through both: exactly one wins, and the hosts hold what the record says", async () => {
          const mine = new EipAssociations(store, hosts, pools, (store as PostgresStore).eipLocks(), logger);
          const theirs = await otherDaemon();
          await vmOn("hv1", "web-1");
          await vmOn("hv2", "web-2");
          const { eip } = await eips.allocate(acme, {});
          hosts.applyDelayMs = 100;
          const outcomes = await Promise.allSettled([
            mine.associate(acme, eip.id, { instanceId: "web-1" }),
            theirs.associate(acme, eip.id, { instanceId: "web-2" }),
          ]);
          expect(outcomes.filter((outcome) => outcome.status === "fulfilled")).toHaveLength(1);
          const refused = outcomes.find((outcome) => outcome.status === "rejected") as PromiseRejectedResult;
          expect((refused.reason as AppError).code).toBe("ALREADY_ASSOCIATED");
          const recorded = await eips.get(acme, eip.id);
          const other = recorded.host === "hv1" ? "hv2" : "hv1";
          expect(hosts.rulesOf(recorded.host as string)).toEqual({
            [formatIpv4(eip.publicIp)]: formatIpv4(recorded.privateIp as number),
          });
          expect(hosts.rulesOf(other)).toEqual({});
        });

        test("moving one EIP through both at once: each move runs alone, and the hosts end as the record says", async () => {
          const mine = new EipAssociations(store, hosts, pools, (store as PostgresStore).eipLocks(), logger);
          const theirs = await otherDaemon();
          await vmOn("hv1", "web-1");
          await vmOn("hv2", "web-2");
          await vmOn("hv1", "web-3");
          const { eip } = await eips.allocate(acme, {});
          await mine.associate(acme, eip.id, { instanceId: "web-1" });
          hosts.applyDelayMs = 100;
          await Promise.all([
            mine.associate(acme, eip.id, { instanceId: "web-2", allowReassociation: true }),
            theirs.associate(acme, eip.id, { instanceId: "web-3", allowReassociation: true }),
          ]);
          await Promise.all([mine.settled(), theirs.settled()]); // the old host's clean-up runs after the answer
          const recorded = await eips.get(acme, eip.id);
          const rules = { hv1: hosts.rulesOf("hv1"), hv2: hosts.rulesOf("hv2") };
          const expected = {
            hv1: {},
            hv2: {},
            [recorded.host as string]: { [formatIpv4(eip.publicIp)]: formatIpv4(recorded.privateIp as number) },
          };
          expect(rules).toEqual(expected);
        });
      });
    }

    describe("associate", () => {
      test("installs the association on the instance's host, then records it", async () => {
        const vm = await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        const associated = await associations.associate(acme, eip.id, { instanceId: "web-1" });
        expect(associated).toMatchObject({ state: "associated", instanceId: "web-1", host: "hv1", privateIp: vm.ip });
        expect(hosts.rulesOf("hv1")).toEqual({ [formatIpv4(eip.publicIp)]: formatIpv4(vm.ip) });
        expect(await eips.get(acme, eip.id)).toEqual(associated);
      });

      test("repeating it for the same instance changes nothing", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        const first = await associations.associate(acme, eip.id, { instanceId: "web-1" });
        expect(await associations.associate(acme, eip.id, { instanceId: "web-1" })).toEqual(first);
      });

      test("without a pool allocation the instance is found by asking the hosts, its address from libvirt", async () => {
        hosts.run("hv2", "db-1", "running", ["192.168.100.77"]);
        const { eip } = await eips.allocate(acme, {});
        const associated = await associations.associate(acme, eip.id, { instanceId: "db-1" });
        expect(associated).toMatchObject({ host: "hv2", privateIp: parseIpv4("192.168.100.77") });
      });

      test.each([
        ["an instance no host has", async () => undefined, "INSTANCE_NOT_FOUND"],
        ["a paused instance", async () => void (await vmOn("hv1", "x", "paused")), "INSTANCE_NOT_RUNNING"],
        ["an instance with no known address", async () => hosts.run("hv1", "x"), "INSTANCE_HAS_NO_ADDRESS"],
      ])("%s is refused and nothing changes", async (_what, arrange, code) => {
        await arrange();
        const { eip } = await eips.allocate(acme, {});
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "x" }))).toBe(code);
        expect((await eips.get(acme, eip.id)).state).toBe("allocated");
        expect(hosts.rulesOf("hv1")).toEqual({});
      });

      test("an instance that already has another EIP answers INSTANCE_HAS_EIP", async () => {
        await vmOn("hv1", "web-1");
        const { eip: first } = await eips.allocate(acme, {});
        const { eip: second } = await eips.allocate(acme, {});
        await associations.associate(acme, first.id, { instanceId: "web-1" });
        expect(await codeOf(associations.associate(acme, second.id, { instanceId: "web-1" }))).toBe("INSTANCE_HAS_EIP");
      });

      test("an EIP associated elsewhere needs allow_reassociation", async () => {
        await vmOn("hv1", "web-1");
        await vmOn("hv2", "web-2");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "web-2" }))).toBe("ALREADY_ASSOCIATED");
        expect((await eips.get(acme, eip.id)).instanceId).toBe("web-1");
      });

      test("a host command failure answers 502 and leaves the recorded state unchanged", async () => {
        await vmOn("hv1", "web-1");
        hosts.failing.add("hv1");
        const { eip } = await eips.allocate(acme, {});
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "web-1" }))).toBe("HOST_COMMAND_FAILED");
        expect(await eips.get(acme, eip.id)).toEqual(eip);
      });

      test("an unreachable target host answers HOST_UNAVAILABLE and leaves the recorded state unchanged", async () => {
        await vmOn("hv1", "web-1");
        hosts.down.add("hv1");
        const { eip } = await eips.allocate(acme, {});
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "web-1" }))).toBe("HOST_UNAVAILABLE");
        expect(await eips.get(acme, eip.id)).toEqual(eip);
      });

      test("a release that lands while the host is being changed stands: NOT_FOUND, rules taken back, address stays free", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        let release: Promise<unknown> = Promise.resolve();
        const apply = hosts.apply.bind(hosts);
        hosts.apply = async (host, association) => {
          await apply(host, association);
          release = eips.release(acme, eip.id);
          await release;
        };
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "web-1" }))).toBe("NOT_FOUND");
        expect(await release).toMatchObject({ id: eip.id });
        expect(await store.read((view) => view.getEip(eip.id))).toBeUndefined();
        expect(await store.read((view) => view.eipOfInstance("web-1"))).toBeUndefined();
        expect(await store.read((view) => view.getAllocation(publicPool.name, eip.id))).toBeUndefined();
        expect(hosts.rulesOf("hv1")).toEqual({});
      });

      test("a release that lands while the instance is looked up stands, and the host is never touched", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        const instanceState = hosts.instanceState.bind(hosts);
        hosts.instanceState = async (host, instance) => {
          await eips.release(acme, eip.id);
          return instanceState(host, instance);
        };
        let applied = 0;
        const apply = hosts.apply.bind(hosts);
        hosts.apply = async (host, association) => {
          applied++;
          await apply(host, association);
        };
        expect(await codeOf(associations.associate(acme, eip.id, { instanceId: "web-1" }))).toBe("NOT_FOUND");
        expect(applied).toBe(0);
        expect(await store.read((view) => view.getEip(eip.id))).toBeUndefined();
        expect(await store.read((view) => view.eipOfInstance("web-1"))).toBeUndefined();
      });

      test("another project's EIP is NOT_FOUND", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        expect(await codeOf(associations.associate(globex, eip.id, { instanceId: "web-1" }))).toBe("NOT_FOUND");
      });
    });

    describe("one VM, one identity", () => {
      const UUID = "5c9d2e7a-1b3f-4a6d-9e8c-7f0a1b2c3d4e";

      test("an EIP associated by name is the same association looked up by UUID", async () => {
        hosts.run("hv1", "web-1");
        hosts.alias("hv1", "web-1", UUID);
        const vm = (await pools.allocate({ vmId: UUID, name: "web-1", host: "hv1" })).allocation;
        const { eip } = await eips.allocate(acme, {});
        const byName = await associations.associate(acme, eip.id, { instanceId: "web-1" });
        expect(byName).toMatchObject({ instanceId: UUID, privateIp: vm.ip });
        expect(await associations.associate(acme, eip.id, { instanceId: UUID })).toEqual(byName);
      });

      test("a second EIP for the same VM by its other identifier answers INSTANCE_HAS_EIP", async () => {
        hosts.run("hv1", "web-1");
        hosts.alias("hv1", "web-1", UUID);
        await pools.allocate({ vmId: UUID, name: "web-1", host: "hv1" });
        const { eip: first } = await eips.allocate(acme, {});
        const { eip: second } = await eips.allocate(acme, {});
        await associations.associate(acme, first.id, { instanceId: UUID });
        expect(await codeOf(associations.associate(acme, second.id, { instanceId: "web-1" }))).toBe("INSTANCE_HAS_EIP");
      });

      test("without an allocation, libvirt's UUID is the identity: name and UUID are one instance", async () => {
        hosts.run("hv2", "db-1", "running", ["192.168.100.77"]);
        hosts.alias("hv2", "db-1", UUID);
        const { eip: first } = await eips.allocate(acme, {});
        const { eip: second } = await eips.allocate(acme, {});
        expect(await associations.associate(acme, first.id, { instanceId: "db-1" })).toMatchObject({
          instanceId: UUID,
        });
        expect(await codeOf(associations.associate(acme, second.id, { instanceId: UUID }))).toBe("INSTANCE_HAS_EIP");
      });
    });

    describe("an EIP follows its VM's address", () => {
      test("releasing the VM's address disassociates its EIP first: rules gone, EIP kept by its project", async () => {
        const vm = await vmOn("hv1", "web-1");
        pools.setAddressDependents(associations);
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        await pools.release("web-1");
        expect(hosts.rulesOf("hv1")).toEqual({});
        expect(await eips.get(acme, eip.id)).toMatchObject({ state: "allocated", project: "acme" });
        expect((await eips.get(acme, eip.id)).privateIp).toBeUndefined();
        expect(await store.read((view) => view.eipOfInstance("web-1"))).toBeUndefined();
        // The address is free again and another VM may have it: nothing points at it any more.
        const other = await pools.allocate({ vmId: "other", ip: vm.ip });
        expect(other.allocation.ip).toBe(vm.ip);
        expect(logs().join("\n")).toContain("its VM's address was released");
      });

      test("with the VM's host down, the release still disassociates and reconciliation removes the rules later", async () => {
        await vmOn("hv1", "web-1");
        pools.setAddressDependents(associations);
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        hosts.down.add("hv1");
        await pools.release("web-1");
        expect((await eips.get(acme, eip.id)).state).toBe("allocated");
        hosts.reconnect("hv1");
        await reconciler.reconcileHost("hv1");
        expect(hosts.rulesOf("hv1")).toEqual({});
      });

      test("an association racing the release either lands before it (and is undone) or finds no address", async () => {
        await vmOn("hv1", "web-1");
        pools.setAddressDependents(associations);
        const { eip } = await eips.allocate(acme, {});
        const [associated, released] = await Promise.allSettled([
          associations.associate(acme, eip.id, { instanceId: "web-1" }),
          pools.release("web-1"),
        ]);
        expect(released.status).toBe("fulfilled");
        expect(["fulfilled", "rejected"]).toContain(associated.status);
        expect((await eips.get(acme, eip.id)).state).toBe("allocated");
        expect(hosts.rulesOf("hv1")).toEqual({});
      });
    });

    describe("moving an EIP (failover)", () => {
      test("moves to the new host and removes it from the old one", async () => {
        await vmOn("hv1", "web-1");
        const target = await vmOn("hv2", "web-2");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        const moved = await associations.associate(acme, eip.id, { instanceId: "web-2", allowReassociation: true });
        expect(moved).toMatchObject({ host: "hv2", instanceId: "web-2", privateIp: target.ip });
        await associations.settled();
        expect(hosts.rulesOf("hv1")).toEqual({});
        expect(hosts.rulesOf("hv2")).toEqual({ [formatIpv4(eip.publicIp)]: formatIpv4(target.ip) });
        // The old instance is free for another EIP now.
        const { eip: other } = await eips.allocate(acme, {});
        expect((await associations.associate(acme, other.id, { instanceId: "web-1" })).state).toBe("associated");
      });

      test("succeeds while the old host is down; its return reconciles the stale rule away", async () => {
        await vmOn("hv1", "web-1");
        await vmOn("hv2", "web-2");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        hosts.down.add("hv1");
        const moved = await associations.associate(acme, eip.id, { instanceId: "web-2", allowReassociation: true });
        expect(moved.host).toBe("hv2");
        await associations.settled();
        expect(hosts.rulesOf("hv1")).not.toEqual({});
        reconciler.start(0);
        hosts.reconnect("hv1");
        await reconciler.settled();
        expect(hosts.rulesOf("hv1")).toEqual({});
        expect(logs().some((line) => line.includes("reconciled host") && line.includes("removed=1"))).toBe(true);
      });

      test("to another VM on the same host replaces the pair", async () => {
        await vmOn("hv1", "web-1");
        const second = await vmOn("hv1", "web-2");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        await associations.associate(acme, eip.id, { instanceId: "web-2", allowReassociation: true });
        expect(hosts.rulesOf("hv1")).toEqual({ [formatIpv4(eip.publicIp)]: formatIpv4(second.ip) });
      });
    });

    describe("disassociate and release", () => {
      test("disassociate removes the rules and records the EIP as allocated", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        const back = await associations.disassociate(acme, eip.id);
        expect(back).toEqual({ ...eip, state: "allocated" });
        expect(hosts.rulesOf("hv1")).toEqual({});
      });

      test("with the host down it is recorded and left to reconciliation", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        hosts.down.add("hv1");
        expect((await associations.disassociate(acme, eip.id)).state).toBe("allocated");
        expect(logs().some((line) => line.includes("left to reconciliation"))).toBe(true);
      });

      test("an EIP that is not associated answers NOT_ASSOCIATED", async () => {
        const { eip } = await eips.allocate(acme, {});
        expect(await codeOf(associations.disassociate(acme, eip.id))).toBe("NOT_ASSOCIATED");
      });

      test("releasing an associated EIP answers STILL_ASSOCIATED and keeps the association", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        expect(await codeOf(eips.release(acme, eip.id))).toBe("STILL_ASSOCIATED");
        expect((await eips.get(acme, eip.id)).state).toBe("associated");
      });
    });

    describe("reconciliation", () => {
      test("gives a flushed host its rules back and leaves other hosts alone", async () => {
        await vmOn("hv1", "web-1");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-1" });
        const expected = hosts.rulesOf("hv1");
        hosts.rules.get("hv1")?.clear();
        await reconciler.reconcileAll();
        expect(hosts.rulesOf("hv1")).toEqual(expected);
        expect(hosts.rulesOf("hv2")).toEqual({});
      });

      test("an EIP taken off a host its record does not name is announced again from the host that holds it", async () => {
        await vmOn("hv1", "web-1");
        const web2 = await vmOn("hv2", "web-2");
        const { eip } = await eips.allocate(acme, {});
        await associations.associate(acme, eip.id, { instanceId: "web-2" });
        // A move to web-1 that reached hv1 (and was announced there) but was never recorded: a crash.
        hosts.rules.get("hv1")?.set(eip.publicIp, parseIpv4("192.168.100.2"));
        await reconciler.reconcileAll();
        await reconciler.settled();
        expect(hosts.rulesOf("hv1")).toEqual({});
        expect(hosts.rulesOf("hv2")).toEqual({ [formatIpv4(eip.publicIp)]: formatIpv4(web2.ip) });
        expect(hosts.announced).toEqual([`hv2 ${formatIpv4(eip.publicIp)}`]);
      });

      test("a stale EIP that no instance holds is removed and announced nowhere", async () => {
        const { eip } = await eips.allocate(acme, {});
        hosts.rules.get("hv1")?.set(eip.publicIp, parseIpv4("192.168.100.2"));
        await reconciler.reconcileAll();
        await reconciler.settled();
        expect(hosts.rulesOf("hv1")).toEqual({});
        expect(hosts.announced).toEqual([]);
      });

      test("a host that cannot be reached is logged and tried again later", async () => {
        hosts.down.add("hv2");
        await reconciler.reconcileAll();
        expect(logs().some((line) => line.includes("reconciliation failed") && line.includes("hv2"))).toBe(true);
      });
    });
  });
}

describe("KeyedLocks", () => {
  test("serialises holders of one key and lets other keys run", async () => {
    const locks = new KeyedLocks();
    const order: string[] = [];
    const slow = locks.run(["a"], async () => {
      await Bun.sleep(20);
      order.push("a1");
    });
    const other = locks.run(["b"], async () => void order.push("b"));
    const second = locks.run(["a"], async () => void order.push("a2"));
    await Promise.all([slow, other, second]);
    expect(order).toEqual(["b", "a1", "a2"]);
  });
});
