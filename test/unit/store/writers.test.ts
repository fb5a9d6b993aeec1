/**
 * Several writers over one PostgreSQL store at once, as the daemons of a fleet share one database:
 * whatever they race for, no address is handed out twice, a VM holds one address, a pool runs out
 * at exactly its size, and the pool checks clean. (An LMDB store has one writer: the daemon holds
 * its data directory's lock.)
 */
import { describe, expect, test } from "bun:test";
import type { ProjectDefinition } from "../../../src/config/config.ts";
import { EipService } from "../../../src/eip/service.ts";
import type { AppError } from "../../../src/errors.ts";
import { checkPool } from "../../../src/pool/fsck.ts";
import { PoolService } from "../../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../../src/pool/startup.ts";
import type { PostgresStore } from "../../../src/store/postgres/store.ts";
import type { StepStore } from "../../../src/store/steps.ts";
import { backendPerTest } from "../../support/store-backends.ts";
import { poolLayout, publicPoolLayout } from "../../support/store-fixture.ts";

const lab = poolLayout("lab", "10.0.0.0/24"); // 253 usable addresses
const small = poolLayout("small", "10.0.1.0/27"); // 29 usable addresses
const layouts = [lab, small];

describe("three writers over one PostgreSQL store", () => {
  let first: StepStore;
  const stores = backendPerTest("postgres", async (opened) => {
    first = opened;
    await adoptPoolLayouts(opened, layouts);
  });

  /** The pool service of three writers: the test's store and two more over the same state. */
  function writers(): PoolService[] {
    return [first, stores.another("daemon-b"), stores.another("daemon-c")].map(
      (store) => new PoolService(store, layouts, "lab"),
    );
  }

  async function problems(): Promise<string[]> {
    return (await Promise.all(layouts.map((layout) => first.read((view) => checkPool(view, layout))))).flatMap(
      (report) => report.problems,
    );
  }

  test("allocating at once, they never hand out an address twice, and the pool checks clean", async () => {
    const services = writers();
    const answers = await Promise.all(
      services.flatMap((service, w) =>
        Array.from({ length: 40 }, (_, i) => service.allocate({ vmId: `vm-${w}-${i}` })),
      ),
    );
    const ips = answers.map(({ allocation }) => allocation.ip);
    expect(new Set(ips).size).toBe(120);
    expect(await problems()).toEqual([]);
    for (const service of services) expect((await service.stats()).allocated).toBe(120);
  });

  test("a daemon reads the allocations recorded on its own host only, whoever made them", async () => {
    const services = writers();
    const made = await Promise.all(
      ["vm-a", "vm-b", "vm-c", "vm-d", "vm-e", "vm-f"].map((vmId, i) =>
        (services[i % 3] as PoolService).allocate({ vmId, host: i % 2 === 0 ? "hv1" : "hv2" }),
      ),
    );
    const onHv1 = await (first as PostgresStore).allocationsOnHost("lab", "hv1");
    expect(onHv1.map(({ vmId, record }) => [vmId, record.ip, record.host])).toEqual(
      [0, 2, 4].map((i) => [made[i]?.allocation.vmId, made[i]?.allocation.ip, "hv1"]),
    );
    expect(await (first as PostgresStore).allocationsOnHost("lab", "hv3")).toEqual([]);
  });

  test("the same VM asked for by all three at once holds one address, created once", async () => {
    const answers = await Promise.all(writers().map((service) => service.allocate({ vmId: "web-1" })));
    expect(new Set(answers.map(({ allocation }) => allocation.ip)).size).toBe(1);
    expect(answers.filter((answer) => answer.created)).toHaveLength(1);
    expect(await problems()).toEqual([]);
  });

  test("two writers' batches allocating the same VMs collide, run again, and give each VM one address", async () => {
    const [a, b] = writers() as [PoolService, PoolService];
    const vmIds = Array.from({ length: 30 }, (_, i) => `both-${i}`);
    const answers = await Promise.all(
      [a, b].map((service) => Promise.all(vmIds.map((vmId) => service.allocate({ vmId })))),
    );
    const [fromA, fromB] = answers.map((list) => list.map(({ allocation }) => allocation.ip));
    expect(fromB).toEqual(fromA as number[]);
    expect(new Set(fromA).size).toBe(30);
    expect(answers.flat().filter((answer) => answer.created)).toHaveLength(30);
    expect(await problems()).toEqual([]);
  });

  test("filling a pool at once, they run out at exactly its size", async () => {
    const attempts = await Promise.allSettled(
      writers().flatMap((service, w) =>
        Array.from({ length: 12 }, (_, i) => service.allocate({ vmId: `vm-${w}-${i}`, pool: "small" })),
      ),
    );
    const refused = attempts.flatMap((attempt) => (attempt.status === "rejected" ? [attempt.reason] : []));
    expect(attempts.length - refused.length).toBe(29);
    expect(refused.map((error) => (error as AppError).code)).toEqual(Array(7).fill("POOL_EXHAUSTED"));
    expect(await problems()).toEqual([]);
  });

  test("addresses released through one are handed out by the others, never while still held", async () => {
    const [a, b, c] = writers() as [PoolService, PoolService, PoolService];
    const held = await Promise.all(
      Array.from({ length: 29 }, (_, i) => a.allocate({ vmId: `old-${i}`, pool: "small" })),
    );
    const freed = held.slice(0, 10).map(({ allocation }) => allocation.vmId);
    const [released, taken] = await Promise.all([
      Promise.all(freed.map((vmId) => b.release(vmId, "small"))),
      Promise.allSettled(Array.from({ length: 10 }, (_, i) => c.allocate({ vmId: `new-${i}`, pool: "small" }))),
    ]);
    expect(released.flat()).toHaveLength(10);
    const newIps = taken.flatMap((t) => (t.status === "fulfilled" ? [t.value.allocation.ip] : []));
    const stillHeld = held.slice(10).map(({ allocation }) => allocation.ip);
    expect(newIps.filter((ip) => stillHeld.includes(ip))).toEqual([]);
    for (const t of taken) if (t.status === "rejected") expect((t.reason as AppError).code).toBe("POOL_EXHAUSTED");
    expect(await problems()).toEqual([]);
  });
});

describe("three writers of elastic IPs over one PostgreSQL store", () => {
  const acme: ProjectDefinition = { name: "acme", apiKeySha256: "0".repeat(64), quota: 5 };
  const publicPool = publicPoolLayout("public", "100.64.0.0/24");
  let first: StepStore;
  const stores = backendPerTest("postgres", async (opened) => {
    first = opened;
    await adoptPoolLayouts(opened, [publicPool]);
  });

  function writers(): EipService[] {
    return [first, stores.another("daemon-b"), stores.another("daemon-c")].map(
      (store) => new EipService(store, new Map([["public", publicPool]]), "public"),
    );
  }

  test("allocating at once for one project, they keep its quota exactly", async () => {
    const attempts = await Promise.allSettled(
      writers().flatMap((service) => Array.from({ length: 4 }, () => service.allocate(acme, {}))),
    );
    const allocated = attempts.flatMap((attempt) => (attempt.status === "fulfilled" ? [attempt.value.eip] : []));
    const refused = attempts.flatMap((attempt) => (attempt.status === "rejected" ? [attempt.reason] : []));
    expect(allocated).toHaveLength(5);
    expect(new Set(allocated.map((eip) => eip.publicIp)).size).toBe(5);
    expect(refused.map((error) => (error as AppError).code)).toEqual(Array(7).fill("QUOTA_EXCEEDED"));
    expect((await first.read((view) => checkPool(view, publicPool))).problems).toEqual([]);
  });

  test("one idempotency key sent to all three at once makes one EIP", async () => {
    const answers = await Promise.all(
      writers().map((service) => service.allocate(acme, { idempotencyKey: "create-web" })),
    );
    expect(new Set(answers.map(({ eip }) => eip.id)).size).toBe(1);
    expect(answers.filter((answer) => answer.created)).toHaveLength(1);
    expect(await (writers()[0] as EipService).list(acme)).toHaveLength(1);
  });
});
