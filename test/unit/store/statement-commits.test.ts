/**
 * New allocations committed in one statement per batch (store/postgres/optimistic.ts): a daemon
 * plans them over what it last read of its own pages, and the statement commits them only if those
 * pages, the pool and the VMs' absence are still as planned. Whatever else happened meanwhile (a
 * release by another daemon, a repeat for a VM that has its address, a page taken away), the step
 * is answered as an ordinary transaction would answer it, and the pool checks clean.
 */
import { describe, expect, test } from "bun:test";
import { formatIpv4 } from "../../../src/net/ipv4.ts";
import { checkPool } from "../../../src/pool/fsck.ts";
import type { PoolService } from "../../../src/pool/service.ts";
import type { PostgresStore } from "../../../src/store/postgres/store.ts";
import { fleetDaemonsPerTest } from "../../support/fleet-daemons.ts";
import { poolLayout } from "../../support/store-fixture.ts";

const lab = poolLayout("lab", "10.0.0.0/22", { strategy: "lowest" });
const layouts = [lab];

const shared = fleetDaemonsPerTest(layouts, "lab");
const { daemon } = shared;

async function ipOf(pools: PoolService, vmId: string): Promise<string> {
  return formatIpv4((await pools.allocate({ vmId })).allocation.ip);
}

async function expectClean(store: PostgresStore): Promise<void> {
  expect((await store.read((view) => checkPool(view, lab))).problems).toEqual([]);
}

describe("allocations committed in one statement", () => {
  test("once a daemon holds a page, its new allocations are committed one statement per batch", async () => {
    const { store, pools } = daemon("hv1");
    // The first claims a page, in a transaction.
    expect(await ipOf(pools, "vm-0")).toBe("10.0.0.2"); // .1 is the gateway
    const ips = await Promise.all(Array.from({ length: 30 }, (_, i) => ipOf(pools, `vm-${i + 1}`)));
    expect(new Set(ips).size).toBe(30);
    expect(store.commitFigures()).toEqual({ statement: 30, transaction: 1, unwritten: 0, stale: 0 });
    const [rows] = await shared.sql<{ count: number }[]>`SELECT count(*)::int AS count FROM allocations`;
    expect(rows?.count).toBe(31);
    expect((await pools.stats()).allocated).toBe(31);
    await expectClean(store);
  });

  test("a page another daemon changed since it was read is read again, and its freed address taken", async () => {
    const a = daemon("hv1");
    const b = daemon("hv2");
    for (const vmId of ["vm-1", "vm-2", "vm-3"]) await ipOf(a.pools, vmId);
    const freed = (await b.pools.release("vm-2"))[0]?.ip as number;
    // Lowest first: the address another daemon freed on this daemon's page is the one handed out.
    expect(await ipOf(a.pools, "vm-4")).toBe(formatIpv4(freed));
    expect(a.store.commitFigures().stale).toBe(1);
    expect(a.store.commitFigures().statement).toBe(3);
    await expectClean(a.store);
  });

  test("a repeat for a VM that holds an address gets that address, not a second one", async () => {
    const { store, pools } = daemon("hv1");
    const first = await pools.allocate({ vmId: "vm-1", hostname: "one" });
    await ipOf(pools, "vm-2");
    const again = await pools.allocate({ vmId: "vm-1", hostname: "one" });
    expect(again.created).toBe(false);
    expect(again.allocation.ip).toBe(first.allocation.ip);
    expect((await pools.stats()).allocated).toBe(2);
    await expectClean(store);
  });

  test("repeats for VMs that have their addresses are answered from one read, and the new allocations of their batch go in one statement", async () => {
    const { store, pools } = daemon("hv1");
    const first = new Map<string, string>();
    for (let i = 1; i <= 5; i++) first.set(`vm-${i}`, await ipOf(pools, `vm-${i}`));
    const before = store.commitFigures();
    const vmIds = ["vm-1", "vm-6", "vm-2", "vm-7", "vm-3", "vm-8", "vm-4", "vm-9", "vm-5", "vm-10"];
    const answers = await Promise.all(vmIds.map((vmId) => pools.allocate({ vmId })));
    answers.forEach((answer, i) => {
      const vmId = vmIds[i] as string;
      expect(answer.created).toBe(!first.has(vmId));
      if (first.has(vmId)) expect(formatIpv4(answer.allocation.ip)).toBe(first.get(vmId) as string);
    });
    expect(new Set(answers.map((answer) => answer.allocation.ip)).size).toBe(10);
    const after = store.commitFigures();
    expect(after.unwritten - before.unwritten).toBe(5);
    expect(after.statement - before.statement).toBe(5);
    expect(after.transaction).toBe(before.transaction);
    expect((await pools.stats()).allocated).toBe(10);
    await expectClean(store);
  });

  test("a repeat and a release of one VM in one batch end as one order of the two would: released after, or allocated anew", async () => {
    const { store, pools } = daemon("hv1");
    const old = await ipOf(pools, "vm-1");
    await ipOf(pools, "vm-2");
    const [released, again, fresh] = await Promise.all([
      pools.allocate({ vmId: "vm-2" }), // alone in the first batch: the next one gathers behind it
      pools.release("vm-1"),
      pools.allocate({ vmId: "vm-1" }),
      pools.allocate({ vmId: "vm-3" }),
    ]).then(([, release, repeat, other]) => [release, repeat, other] as const);
    expect(released.map((allocation) => formatIpv4(allocation.ip))).toEqual([old]);
    const held = await store.read((view) => view.getAllocation("lab", "vm-1"));
    if (again.created) expect(held?.ip).toBe(again.allocation.ip);
    else {
      // Answered before the release: the address it had, released since.
      expect(formatIpv4(again.allocation.ip)).toBe(old);
      expect(held).toBeUndefined();
    }
    expect(fresh.created).toBe(true);
    expect((await pools.stats()).allocated).toBe(held === undefined ? 2 : 3);
    await expectClean(store);
  });

  test("a repeat in the same batch as the VM's first allocation is answered with the address it gets", async () => {
    const { store, pools } = daemon("hv1");
    await ipOf(pools, "vm-0");
    const answers = await Promise.all([pools.allocate({ vmId: "vm-1" }), pools.allocate({ vmId: "vm-1" })]);
    expect(answers.map((answer) => answer.created).sort()).toEqual([false, true]);
    expect(answers[0]?.allocation.ip).toBe(answers[1]?.allocation.ip as number);
    expect((await pools.stats()).allocated).toBe(2);
    await expectClean(store);
  });

  test("names given in one batch are kept, the last VM to take a name owning it", async () => {
    const { store, pools } = daemon("hv1");
    await ipOf(pools, "vm-0");
    await Promise.all([
      pools.allocate({ vmId: "vm-1", name: "web" }),
      pools.allocate({ vmId: "vm-2", name: "db" }),
      pools.allocate({ vmId: "vm-3", name: "web" }),
    ]);
    expect(store.commitFigures().statement).toBe(3);
    const names = await shared.sql<{ name: string; vm_id: string }[]>`SELECT name, vm_id FROM vm_names ORDER BY name`;
    expect(names.map((row) => [row.name, row.vm_id])).toEqual([
      ["db", "vm-2"],
      ["web", "vm-3"],
    ]);
    await expectClean(store);
  });

  test("a page whose version changed under the plan refuses the statement whole: nothing of the batch is written twice", async () => {
    const { store, pools } = daemon("hv1");
    await ipOf(pools, "vm-0");
    await ipOf(pools, "vm-1");
    // Another writer touches the page's flag (its bits stay): the version this daemon read is gone.
    await shared.sql`UPDATE pool_pages SET filled = true WHERE page = 0`;
    await shared.sql`UPDATE pool_pages SET filled = false WHERE page = 0`;
    const ips = await Promise.all(["vm-2", "vm-3", "vm-4"].map((vmId) => ipOf(pools, vmId)));
    expect(ips.sort()).toEqual(["10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    expect(store.commitFigures().stale).toBe(1);
    await expectClean(store);
  });
});
