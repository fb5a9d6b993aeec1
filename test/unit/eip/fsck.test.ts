/** `checkEips` over a real store: a consistent store has no problems; each kind of damage is named. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { ProjectDefinition } from "../../../src/config/config.ts";
import { checkEips } from "../../../src/eip/fsck.ts";
import type { EipRecord } from "../../../src/eip/store.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";
import { releaseInTransaction } from "../../../src/pool/allocator.ts";
import { type StoreFixture, storeFixture } from "../../support/store-fixture.ts";

const PROJECT: ProjectDefinition = { name: "web", apiKeySha256: "0".repeat(64), quota: 10 };

let fx: StoreFixture;
let allocated: EipRecord;
let associated: EipRecord;

/** Marks an EIP associated the way the association service records it. */
async function associate(record: EipRecord, instanceId: string): Promise<EipRecord> {
  const next: EipRecord = {
    ...record,
    state: "associated",
    instanceId,
    host: "hv1",
    privateIp: parseIpv4("192.168.100.11"),
    associatedAt: Date.now(),
  };
  await fx.store.write(() => {
    fx.store.putEip(next);
    fx.store.putInstanceEip(instanceId, next.id);
  });
  return next;
}

function problems(): string[] {
  return checkEips(fx.store, new Map([["public", fx.publicPool]]), fx.store).flatMap((report) => report.problems);
}

beforeEach(async () => {
  fx = await storeFixture();
  allocated = (await fx.eips.allocate(PROJECT, { idempotencyKey: "k1" })).eip;
  associated = await associate((await fx.eips.allocate(PROJECT, {})).eip, "vm-a");
});
afterEach(() => fx.dispose());

describe("ippool fsck over elastic IPs", () => {
  test("allocated and associated EIPs with their indexes have no problems", () => {
    const reports = checkEips(fx.store, new Map([["public", fx.publicPool]]), fx.store);
    expect(reports.map((r) => [r.pool, r.allocations, r.problems])).toEqual([
      ["elastic IPs public", 2, []],
      ["elastic IP indexes", 2, []],
    ]);
  });

  test("an EIP whose address bit and allocation are gone is reported", async () => {
    await fx.store.write(() => releaseInTransaction(fx.store, fx.publicPool, allocated.id));
    expect(problems()).toEqual([`${allocated.id}: 100.64.0.1 is not allocated to it in its pool`]);
  });

  test("an allocation in a public pool without its EIP record is reported", async () => {
    await fx.store.write(() => fx.store.removeEip(allocated));
    expect(problems()).toEqual([
      `100.64.0.1: allocated to ${allocated.id}, not an EIP of it`,
      `idempotency key web/"k1" names ${allocated.id}, which does not carry it`,
    ]);
  });

  test("an associated EIP the instance index does not name is reported", async () => {
    await fx.store.write(() => fx.store.removeInstanceEip("vm-a"));
    expect(problems()).toEqual([`${associated.id}: instance index of vm-a does not name it`]);
  });

  test("an instance index entry naming an unassociated EIP is reported", async () => {
    await fx.store.write(() => fx.store.putInstanceEip("vm-b", allocated.id));
    expect(problems()).toEqual([`instance index vm-b names ${allocated.id}, which is not associated with it`]);
  });

  test("an idempotency key naming another EIP is reported from both sides", async () => {
    await fx.store.write(() => fx.store.putIdempotency("web", "k1", { id: associated.id, pool: "public" }));
    expect(problems()).toEqual([
      `${allocated.id}: its idempotency key names ${associated.id}`,
      `idempotency key web/"k1" names ${associated.id}, which does not carry it`,
    ]);
  });

  test("an EIP of a public pool that is no longer configured is reported", () => {
    const reports = checkEips(fx.store, new Map(), fx.store);
    expect(reports.flatMap((r) => r.problems).sort()).toEqual(
      [`${allocated.id}: pool public is not configured`, `${associated.id}: pool public is not configured`].sort(),
    );
  });
});
