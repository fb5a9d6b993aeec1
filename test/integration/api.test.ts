/** Every IP Pool API endpoint and its error paths, over TCP and the Unix socket, on each store backend. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon } from "../support/daemon.ts";
import { type DaemonStore, daemonStore } from "../support/daemon-store.ts";
import { STORE_BACKENDS } from "../support/store-backends.ts";

const POOLS = poolsToml([
  { name: "vms", cidr: "172.16.0.0/24", gateway: "172.16.0.1", reserved: ["172.16.0.2-172.16.0.9", "172.16.0.100"] },
  { name: "small", cidr: "10.9.0.0/29", gateway: "10.9.0.1", strategy: "lowest" },
  { name: "p2p", cidr: "10.8.0.0/31" },
  { name: "host", cidr: "10.7.0.5/32" },
]);

let daemon: Daemon;
const allocate = (body: unknown, via: "tcp" | "unix" = "tcp") => daemon.post("/api/v1/ip/allocate", body, via);
const del = (path: string) => daemon.json(path, { method: "DELETE" });

for (const backend of STORE_BACKENDS) {
  describe(`${backend} store`, () => {
    let store: DaemonStore;
    beforeAll(async () => {
      store = await daemonStore(backend);
      daemon = await Daemon.start({ config: POOLS + store.toml });
    });
    afterAll(async () => {
      await daemon.dispose();
      await store.stop();
    });

    describe("allocate", () => {
      test("skips the gateway and reserved ranges and answers 201 with the allocation", async () => {
        const { status, body } = await allocate({ vm_id: "a-1", hostname: "web-1" });
        expect(status).toBe(201);
        expect(body).toMatchObject({ ip: "172.16.0.10", vm_id: "a-1", hostname: "web-1", pool: "vms" });
        expect(Date.parse(body.created_at)).toBeGreaterThan(0);
      });

      test("a repeat for the same vm_id answers 201 with the same address, as the original did; a header tells it apart", async () => {
        const first = await daemon.fetch("/api/v1/ip/allocate", {
          method: "POST",
          body: JSON.stringify({ vm_id: "a-2" }),
        });
        const repeat = await daemon.fetch("/api/v1/ip/allocate", {
          method: "POST",
          body: JSON.stringify({ vm_id: "a-2" }),
          via: "unix",
        });
        expect([first.status, repeat.status]).toEqual([201, 201]);
        expect([first.headers.get("x-ippool-created"), repeat.headers.get("x-ippool-created")]).toEqual([
          "true",
          "false",
        ]);
        expect(((await repeat.json()) as { ip: string }).ip).toBe(((await first.json()) as { ip: string }).ip);
      });

      test("a requested free address is granted", async () => {
        const { status, body } = await allocate({ vm_id: "a-3", ip: "172.16.0.200" });
        expect(status).toBe(201);
        expect(body.ip).toBe("172.16.0.200");
      });

      test("a requested address held by another vm answers 409 ADDRESS_IN_USE", async () => {
        const { status, body } = await allocate({ vm_id: "a-4", ip: "172.16.0.200" });
        expect(status).toBe(409);
        expect(body.code).toBe("ADDRESS_IN_USE");
        expect(body.error).toContain("a-3");
      });

      test.each([
        ["outside the pool", "172.16.1.5"],
        ["a reserved address", "172.16.0.100"],
        ["the gateway", "172.16.0.1"],
        ["the broadcast address", "172.16.0.255"],
      ])("a requested address that is %s answers 400 INVALID_IP", async (_what, ip) => {
        const { status, body } = await allocate({ vm_id: "a-5", ip });
        expect(status).toBe(400);
        expect(body.code).toBe("INVALID_IP");
        expect((await daemon.json("/api/v1/ip/a-5")).status).toBe(404);
      });

      test("a vm asking for a different address than the one it holds answers 409", async () => {
        const { status, body } = await allocate({ vm_id: "a-3", ip: "172.16.0.201" });
        expect(status).toBe(409);
        expect(body.code).toBe("VM_HAS_OTHER_ADDRESS");
      });

      test("one vm_id gets one address per pool", async () => {
        const inVms = await allocate({ vm_id: "multi" });
        const inSmall = await allocate({ vm_id: "multi", pool: "small" });
        expect(inSmall.status).toBe(201);
        expect(inSmall.body.pool).toBe("small");
        expect(inSmall.body.ip).not.toBe(inVms.body.ip);
        expect(inSmall.body).toMatchObject({ gateway: "10.9.0.1", network: "10.9.0.0/29" });
      });

      test("the host a launch hook reports is stored, and a repeat from another host moves it there", async () => {
        const first = await allocate({ vm_id: "mig-1", host: "hv1" });
        expect(first.body.host).toBe("hv1");
        const moved = await allocate({ vm_id: "mig-1", host: "hv2" });
        expect(moved.status).toBe(201);
        expect(moved.body).toMatchObject({ ip: first.body.ip, host: "hv2" });
        expect((await daemon.json("/api/v1/ip/mig-1")).body.host).toBe("hv2");
        expect((await allocate({ vm_id: "mig-2", host: "Bad Host" })).status).toBe(422);
      });

      test("an unknown pool answers 404 POOL_NOT_FOUND", async () => {
        const { status, body } = await allocate({ vm_id: "x", pool: "nope" });
        expect(status).toBe(404);
        expect(body.code).toBe("POOL_NOT_FOUND");
      });

      test("a /31 pool hands out both addresses and a /32 its one (RFC 3021)", async () => {
        const p2p = await Promise.all(["p-1", "p-2"].map((vm_id) => allocate({ vm_id, pool: "p2p" })));
        expect(p2p.map((r) => r.body.ip).sort()).toEqual(["10.8.0.0", "10.8.0.1"]);
        expect(p2p[0]?.body.gateway).toBeUndefined();
        expect((await allocate({ vm_id: "p-3", pool: "p2p" })).status).toBe(503);
        const host = await allocate({ vm_id: "h-1", pool: "host" });
        expect(host.body).toMatchObject({ ip: "10.7.0.5", network: "10.7.0.5/32" });
      });
    });

    describe("exhaustion", () => {
      test("a full pool answers 503 POOL_EXHAUSTED and allocates nothing", async () => {
        // 10.9.0.0/29: .0 network, .1 gateway, .7 broadcast → 5 usable; "multi" holds one.
        for (let i = 0; i < 4; i++) expect((await allocate({ vm_id: `s-${i}`, pool: "small" })).status).toBe(201);
        const full = await allocate({ vm_id: "s-overflow", pool: "small" });
        expect(full.status).toBe(503);
        expect(full.body).toMatchObject({ code: "POOL_EXHAUSTED" });
        expect(full.body.error).toContain("No available IPs");
        const stats = await daemon.json("/api/v1/ip/stats?pool=small");
        expect(stats.body).toMatchObject({ total: 5, allocated: 5, available: 0, usage: 100 });
      });

      test("the lowest strategy reuses a released address at once", async () => {
        const released = await del("/api/v1/ip/release/s-1?pool=small");
        const freed = released.body.released[0].ip;
        const again = await allocate({ vm_id: "s-new", pool: "small" });
        expect(again.body.ip).toBe(freed);
      });
    });

    describe("next-fit", () => {
      test("a released address is not handed out again before the pool wraps", async () => {
        const first = await allocate({ vm_id: "nf-1" });
        await del("/api/v1/ip/release/nf-1");
        const next = await allocate({ vm_id: "nf-2" });
        expect(next.body.ip).not.toBe(first.body.ip);
      });
    });

    describe("release", () => {
      test("by vm_id answers 200 with the original message and the released address", async () => {
        const { body: held } = await allocate({ vm_id: "r-1" });
        const { status, body } = await del("/api/v1/ip/release/r-1");
        expect(status).toBe(200);
        expect(body).toMatchObject({ message: "IP released successfully", vm_id: "r-1" });
        expect(body.released[0].ip).toBe(held.ip);
        expect((await del("/api/v1/ip/release/r-1")).status).toBe(404);
      });

      test("by address answers 200 and frees it", async () => {
        const { body: held } = await allocate({ vm_id: "r-2" });
        const { status, body } = await del(`/api/v1/ip/release-by-ip/${held.ip}`);
        expect(status).toBe(200);
        expect(body).toMatchObject({ message: "IP released successfully", ip: held.ip });
        expect((await daemon.json("/api/v1/ip/r-2")).status).toBe(404);
      });

      test("by an address nobody holds answers 404 NOT_FOUND", async () => {
        const { status, body } = await del("/api/v1/ip/release-by-ip/172.16.0.250");
        expect(status).toBe(404);
        expect(body.code).toBe("NOT_FOUND");
      });

      test.each([
        ["not an address", "1.2.3", 400],
        ["outside every pool", "192.0.2.1", 400],
      ])("by an address that is %s answers 400", async (_what, ip, status) => {
        const response = await del(`/api/v1/ip/release-by-ip/${ip}`);
        expect(response.status).toBe(status);
        expect(response.body.error).toBeString();
      });

      test("without a pool releases the vm in every pool", async () => {
        await allocate({ vm_id: "everywhere" });
        await allocate({ vm_id: "everywhere", pool: "host" }).catch(() => undefined);
        await del("/api/v1/ip/release/h-1?pool=host");
        await allocate({ vm_id: "everywhere", pool: "host" });
        const { body } = await del("/api/v1/ip/release/everywhere");
        expect(body.released.map((r: { pool: string }) => r.pool).sort()).toEqual(["host", "vms"]);
      });
    });

    describe("lookups", () => {
      test("get returns the allocation with its hostname", async () => {
        await allocate({ vm_id: "g-1", hostname: "db-1" });
        const { status, body } = await daemon.json("/api/v1/ip/g-1", { via: "unix" });
        expect(status).toBe(200);
        expect(body).toMatchObject({ vm_id: "g-1", hostname: "db-1", pool: "vms" });
      });

      test("get of an unknown vm answers 404 with the original error field and a code", async () => {
        const { status, body } = await daemon.json("/api/v1/ip/nobody");
        expect(status).toBe(404);
        expect(body).toMatchObject({ code: "NOT_FOUND" });
        expect(body.error).toBeString();
      });

      test("the allocation list without a limit is the whole list, as a plain array", async () => {
        const { body } = await daemon.json("/api/v1/ip/allocations");
        expect(Array.isArray(body)).toBe(true);
        expect(body.find((a: { vm_id: string }) => a.vm_id === "g-1")).toMatchObject({ hostname: "db-1" });
      });

      test("pagination walks the list with limit and after, pool by pool, address by address", async () => {
        const all = (await daemon.json("/api/v1/ip/allocations")).body as { ip: string }[];
        const walked: string[] = [];
        let after: string | null = null;
        for (let pages = 0; pages < 100; pages++) {
          const response = await daemon.fetch(`/api/v1/ip/allocations?limit=3${after ? `&after=${after}` : ""}`);
          const page = (await response.json()) as { ip: string }[];
          expect(page.length).toBeLessThanOrEqual(3);
          walked.push(...page.map((a) => a.ip));
          after = response.headers.get("x-next-after");
          if (!after) break;
        }
        expect(walked).toEqual(all.map((a) => a.ip));
      });

      test("the list can be limited to one pool", async () => {
        const { body } = await daemon.json("/api/v1/ip/allocations?pool=small");
        expect(body.length).toBeGreaterThan(0);
        expect(body.every((a: { pool: string }) => a.pool === "small")).toBe(true);
      });

      test("stats of the default pool keep the original fields", async () => {
        const { status, body } = await daemon.json("/api/v1/ip/stats");
        expect(status).toBe(200);
        expect(body).toMatchObject({ pool: "vms", network: "172.16.0.0/24", gateway: "172.16.0.1", total: 244 });
        expect(body.allocated + body.available).toBe(244);
        expect(body.usage).toBeCloseTo((body.allocated / 244) * 100, 6);
      });

      test("pools lists every pool with its settings and stats", async () => {
        const { body } = await daemon.json("/api/v1/pools");
        expect(body.map((p: { name: string }) => p.name)).toEqual(["vms", "small", "p2p", "host"]);
        expect(body[0]).toMatchObject({ default: true, strategy: "next-fit", network: "172.16.0.0/24" });
        expect(body[0].reserved).toContain("172.16.0.2-172.16.0.9");
        const one = await daemon.json("/api/v1/pools/small");
        expect(one.body).toMatchObject({ name: "small", strategy: "lowest", stats: { total: 5 } });
        expect((await daemon.json("/api/v1/pools/none")).status).toBe(404);
      });
    });
  });
}
