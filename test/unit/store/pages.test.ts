/**
 * Pages held by daemons over one PostgreSQL store (docs/FLEET.md): each daemon takes new addresses
 * from pages it has claimed, claims another when its own are full, borrows a live daemon's page
 * when none is left to claim, takes a page whose holder's heartbeat is past the lease, and a
 * daemon whose page was taken has its write refused and allocates elsewhere. Whatever happens, no
 * address is handed out twice and the pool checks clean.
 */
import { describe, expect, test } from "bun:test";
import { formatIpv4, parseIpv4 } from "../../../src/net/ipv4.ts";
import { PAGE_BITS } from "../../../src/pool/bitmap.ts";
import { checkPool } from "../../../src/pool/fsck.ts";
import type { PoolLayout } from "../../../src/pool/layout.ts";
import type { PoolService } from "../../../src/pool/service.ts";
import type { PostgresStore } from "../../../src/store/postgres/store.ts";
import { fleetDaemonsPerTest } from "../../support/fleet-daemons.ts";
import { poolLayout } from "../../support/store-fixture.ts";

/** Four pages of 4096 addresses, all of them open. */
const wide = poolLayout("wide", "10.0.0.0/18");
/** Four pages with four free addresses each: 10.0.0.2–5, 10.0.16.0–3, 10.0.32.0–3, 10.0.48.0–3. */
const narrow = poolLayout("narrow", "10.1.0.0/18", {
  gateway: "10.1.0.1",
  reserved: ["10.1.0.6-10.1.15.255", "10.1.16.4-10.1.31.255", "10.1.32.4-10.1.47.255", "10.1.48.4-10.1.63.254"],
});
/** One page. */
const single = poolLayout("single", "10.2.0.0/24");
const layouts = [wide, narrow, single];

const shared = fleetDaemonsPerTest(layouts, "wide");
const { daemon } = shared;

async function ipsOf(pools: PoolService, pool: PoolLayout, vmIds: readonly string[]): Promise<string[]> {
  const answers = await Promise.all(vmIds.map((vmId) => pools.allocate({ vmId, pool: pool.name })));
  return answers.map(({ allocation }) => formatIpv4(allocation.ip));
}

const pageOf = (pool: PoolLayout, ip: string) => Math.floor(pool.ordinalOf(parseIpv4(ip)) / PAGE_BITS);

async function holders(pool: string): Promise<{ page: number; owner: string | null; epoch: number }[]> {
  return [
    ...(await shared.sql<{ page: number; owner: string | null; epoch: number }[]>`
      SELECT page, owner, epoch::int AS epoch FROM pool_pages WHERE pool = ${pool} ORDER BY page`),
  ];
}

async function problems(store: PostgresStore): Promise<string[]> {
  const reports = await Promise.all(layouts.map((layout) => store.read((view) => checkPool(view, layout))));
  return reports.flatMap((report) => report.problems);
}

describe("pages held by daemons", () => {
  test("three daemons allocating at once each take their addresses from a page of their own", async () => {
    const fleet = ["hv1", "hv2", "hv3"].map((id) => daemon(id));
    const ips = await Promise.all(
      fleet.map(({ pools }, d) =>
        ipsOf(
          pools,
          wide,
          Array.from({ length: 20 }, (_, i) => `vm-${d}-${i}`),
        ),
      ),
    );
    expect(new Set(ips.flat()).size).toBe(60);
    const pages = ips.map((list) => new Set(list.map((ip) => pageOf(wide, ip))));
    for (const set of pages) expect(set.size).toBe(1);
    expect(new Set(pages.map((set) => [...set][0])).size).toBe(3);
    const owners = (await holders("wide")).filter((row) => row.owner !== null);
    expect(owners.map((row) => row.owner).sort()).toEqual(["hv1", "hv2", "hv3"]);
    for (const [d, set] of pages.entries()) {
      expect(owners.find((row) => row.page === [...set][0])?.owner).toBe(`hv${d + 1}`);
    }
    expect(await problems(fleet[0]?.store as PostgresStore)).toEqual([]);
  });

  test("a daemon whose pages are full claims the next free page, and with none left borrows a live daemon's", async () => {
    const a = daemon("hv1");
    const b = daemon("hv2");
    expect(await ipsOf(a.pools, narrow, ["a1", "a2", "a3", "a4"])).toEqual([
      "10.1.0.2",
      "10.1.0.3",
      "10.1.0.4",
      "10.1.0.5",
    ]);
    expect(await ipsOf(b.pools, narrow, ["b1"])).toEqual(["10.1.16.0"]);
    expect(await ipsOf(a.pools, narrow, ["a5"])).toEqual(["10.1.32.0"]);
    await ipsOf(a.pools, narrow, ["a6", "a7", "a8", "a9", "a10", "a11", "a12"]);
    expect((await holders("narrow")).map((row) => row.owner)).toEqual(["hv1", "hv2", "hv1", "hv1"]);
    // Every page it holds is full and the only one with room is hv2's, alive: it borrows.
    expect(await ipsOf(a.pools, narrow, ["a13"])).toEqual(["10.1.16.1"]);
    expect(a.store.pageFigures().claimsFindingNone).toBe(1);
    expect(await ipsOf(b.pools, narrow, ["b2", "b3"])).toEqual(["10.1.16.2", "10.1.16.3"]);
    const full = await Promise.allSettled([a.pools.allocate({ vmId: "a14", pool: "narrow" })]);
    expect(full[0]).toMatchObject({ status: "rejected", reason: { code: "POOL_EXHAUSTED" } });
    expect((await holders("narrow")).map((row) => row.owner)).toEqual(["hv1", "hv2", "hv1", "hv1"]);
    expect(a.store.pageFigures().fenced + b.store.pageFigures().fenced).toBe(0);
    expect(await problems(a.store)).toEqual([]);
  });

  test("a page whose holder's heartbeat is past the lease is taken; the holder's next write is refused and it allocates elsewhere", async () => {
    // hv1 would beat once in 20 minutes: its heartbeat is set back by hand, as a pause would leave it.
    const paused = daemon("hv1", 3600);
    const other = daemon("hv2", 2);
    expect(await ipsOf(paused.pools, single, ["p1"])).toEqual(["10.2.0.2"]);
    expect(await holders("single")).toEqual([{ page: 0, owner: "hv1", epoch: 1 }]);
    await shared.sql`UPDATE daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = 'hv1'`;
    expect(await ipsOf(other.pools, single, ["o1"])).toEqual(["10.2.0.3"]);
    expect(await holders("single")).toEqual([{ page: 0, owner: "hv2", epoch: 2 }]);
    expect(other.store.pageFigures().claims.stale).toBe(1);
    // hv1 still believes it holds page 0 at epoch 1: its write is fenced out, and it borrows.
    expect(await ipsOf(paused.pools, single, ["p2"])).toEqual(["10.2.0.4"]);
    expect(paused.store.pageFigures().fenced).toBe(1);
    // Its one-statement commit was refused as a page taken (not planned again over and over).
    expect(paused.store.commitFigures()).toMatchObject({ statement: 0, stale: 0 });
    expect(await holders("single")).toEqual([{ page: 0, owner: "hv2", epoch: 2 }]);
    expect(await ipsOf(other.pools, single, ["o2"])).toEqual(["10.2.0.5"]);
    expect(await problems(other.store)).toEqual([]);
  });

  test("a daemon started again takes back the pages it held before any other", async () => {
    const first = daemon("hv1");
    const b = daemon("hv2");
    await ipsOf(first.pools, wide, ["a1"]);
    await ipsOf(b.pools, wide, ["b1"]);
    await shared.stop(first);
    const again = daemon("hv1");
    expect(await ipsOf(again.pools, wide, ["a2"])).toEqual(["10.0.0.3"]);
    expect(again.store.pageFigures().claims).toEqual({ own: 1, free: 0, stale: 0 });
    expect((await holders("wide")).map((row) => [row.owner, row.epoch])).toEqual([
      ["hv1", 2],
      ["hv2", 1],
      [null, 0],
      [null, 0],
    ]);
  });

  test("a daemon sets aside the pages it filled, and holds one again once it releases an address on it", async () => {
    const a = daemon("hv1");
    await ipsOf(a.pools, narrow, ["a1", "a2", "a3", "a4"]);
    // Page 0 is full: still hv1's in the database, but no longer among the pages it allocates from.
    expect(a.store.pageFigures().held.get("narrow")).toBe(0);
    expect(await ipsOf(a.pools, narrow, ["a5"])).toEqual(["10.1.16.0"]);
    expect(a.store.pageFigures().held.get("narrow")).toBe(1);
    await a.pools.release("a2", "narrow");
    // Held again at the epoch it was claimed at: no claim was made for it.
    expect(a.store.pageFigures().held.get("narrow")).toBe(2);
    expect(a.store.pageFigures().claims).toEqual({ own: 0, free: 2, stale: 0 });
    expect((await holders("narrow")).slice(0, 2)).toEqual([
      { page: 0, owner: "hv1", epoch: 1 },
      { page: 1, owner: "hv1", epoch: 1 },
    ]);
    // Next-fit goes on from page 1, and comes back to the freed address once the rest is taken.
    expect(await ipsOf(a.pools, narrow, ["a6", "a7", "a8"])).toEqual(["10.1.16.1", "10.1.16.2", "10.1.16.3"]);
    expect(await ipsOf(a.pools, narrow, ["a9"])).toEqual(["10.1.0.3"]);
    expect(a.store.pageFigures().fenced).toBe(0);
    expect(await problems(a.store)).toEqual([]);
  });

  test("a daemon releases an address on a page another holds, and the holder hands it out again", async () => {
    const a = daemon("hv1");
    const b = daemon("hv2");
    expect(await ipsOf(a.pools, narrow, ["a1", "a2", "a3", "a4"])).toHaveLength(4);
    expect((await b.pools.release("a2", "narrow")).map((released) => formatIpv4(released.ip))).toEqual(["10.1.0.3"]);
    expect((await holders("narrow"))[0]).toEqual({ page: 0, owner: "hv1", epoch: 1 });
    expect(await ipsOf(a.pools, narrow, ["a5"])).toEqual(["10.1.0.3"]);
    expect(a.store.pageFigures().fenced).toBe(0);
    expect(await problems(a.store)).toEqual([]);
  });
});
