import { describe, expect, test } from "bun:test";
import type { Nic } from "../../../src/dhcp/link.ts";
import { AppError } from "../../../src/errors.ts";
import { formatIpv4, parseIpv4 } from "../../../src/net/ipv4.ts";
import { type Allocation, allocateInTransaction, releaseInTransaction } from "../../../src/pool/allocator.ts";
import { testBit } from "../../../src/pool/bitmap.ts";
import { PoolStateConflictError } from "../../../src/pool/errors.ts";
import { checkPool } from "../../../src/pool/fsck.ts";
import type { PoolLayout, Strategy } from "../../../src/pool/layout.ts";
import { PoolService } from "../../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../../src/pool/startup.ts";
import type { StepStore } from "../../../src/store/steps.ts";
import { backendPerTest, STORE_BACKENDS } from "../../support/store-backends.ts";
import { poolLayout } from "../../support/store-fixture.ts";

let store: StepStore;

/** A started service over the current store. */
async function serve(
  layouts: readonly PoolLayout[],
  defaultPool = (layouts[0] as PoolLayout).name,
): Promise<PoolService> {
  const service = new PoolService(store, layouts, defaultPool);
  await adoptPoolLayouts(store, layouts);
  return service;
}

/** Allocates `count` addresses in one transaction; returns them as dotted quads, in order. */
async function fill(service: PoolService, pool: string, count: number, prefix = `${pool}-vm`): Promise<string[]> {
  return store.write((view) => {
    const ips: string[] = [];
    for (let i = 0; i < count; i++) {
      const outcome = allocateInTransaction(view, service.layout(pool), { vmId: `${prefix}-${i}` });
      if (!outcome.ok) throw outcome.error;
      ips.push(formatIpv4(outcome.value.allocation.ip));
    }
    return ips;
  });
}

async function ipOf(service: PoolService, vmId: string, pool?: string): Promise<string> {
  const { allocation } = await service.allocate({ vmId, ...(pool === undefined ? {} : { pool }) });
  return formatIpv4(allocation.ip);
}

async function rejection(body: () => unknown): Promise<AppError> {
  try {
    await body();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error("expected an AppError, none was thrown");
}

async function expectClean(service: PoolService): Promise<void> {
  for (const l of service.layouts) expect((await store.read((view) => checkPool(view, l))).problems).toEqual([]);
}

function range(from: number, to: number, prefix: string): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);
}

for (const backend of STORE_BACKENDS) {
  describe(`${backend} store`, () => {
    const stores = backendPerTest(backend, (opened) => {
      store = opened;
    });

    describe("allocate", () => {
      test("the first allocation of a /24 is .2, after the gateway .1", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const result = await service.allocate({ vmId: "vm-1", hostname: "web-1" });
        expect(result.created).toBe(true);
        expect(result.allocation).toMatchObject({
          pool: "lab",
          vmId: "vm-1",
          ip: parseIpv4("10.0.0.2"),
          hostname: "web-1",
        });
        expect(typeof result.allocation.createdAt).toBe("number");
      });

      test("an allocation without a hostname has none", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const { allocation } = await service.allocate({ vmId: "vm-1" });
        expect("hostname" in allocation).toBe(false);
        expect("hostname" in (await service.get("vm-1"))).toBe(false);
      });

      test("a gateway elsewhere in the CIDR leaves .1 free for the first allocation", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24", { gateway: "10.0.0.254" })]);
        expect(await ipOf(service, "vm-1")).toBe("10.0.0.1");
      });

      test("a repeated allocation for the same vm returns the same address with created=false", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const first = await service.allocate({ vmId: "vm-1", hostname: "web-1" });
        const again = await service.allocate({ vmId: "vm-1", hostname: "other-name" });
        expect(again.created).toBe(false);
        expect(again.allocation).toEqual(first.allocation);
        expect((await service.stats()).allocated).toBe(1);
        expect(await ipOf(service, "vm-2")).toBe("10.0.0.3");
      });

      test("a VM's NIC is kept as given, and a repeat from another NIC moves it there", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const first: Nic = { mac: "52:54:00:00:00:01", link: { kind: "network", name: "default" } };
        const moved: Nic = { mac: "52:54:00:00:00:02", link: { kind: "bridge", name: "br0" } };
        expect((await service.allocate({ vmId: "vm-1", nic: first })).allocation.nic).toEqual(first);
        expect((await service.get("vm-1")).nic).toEqual(first);
        expect((await service.allocate({ vmId: "vm-1", nic: moved })).allocation.nic).toEqual(moved);
        expect((await service.get("vm-1")).nic).toEqual(moved);
      });

      test("allocations go to the default pool unless one is named", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")], "b");
        expect(await ipOf(service, "vm-1")).toBe("10.0.1.2");
        expect(await ipOf(service, "vm-2", "a")).toBe("10.0.0.2");
      });

      test("the same vm may hold one address in each pool", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")]);
        expect(await ipOf(service, "vm-1", "a")).toBe("10.0.0.2");
        expect(await ipOf(service, "vm-1", "b")).toBe("10.0.1.2");
        expect(formatIpv4((await service.get("vm-1", "b")).ip)).toBe("10.0.1.2");
      });

      test("an unknown pool is POOL_NOT_FOUND", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const error = await rejection(() => service.allocate({ vmId: "vm-1", pool: "nope" }));
        expect(error.code).toBe("POOL_NOT_FOUND");
        expect(error.status).toBe(404);
      });
    });

    describe("next-fit", () => {
      test("does not reuse a released address before the pool wraps", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect(await ipOf(service, "a")).toBe("10.0.0.2");
        expect(await ipOf(service, "b")).toBe("10.0.0.3");
        expect(await ipOf(service, "c")).toBe("10.0.0.4");
        await service.release("b");
        expect(await ipOf(service, "d")).toBe("10.0.0.5");
        expect(await ipOf(service, "e")).toBe("10.0.0.6");
      });

      test("wraps to the start and reuses released addresses once the end is reached", async () => {
        // /29: .0 network, .1 gateway, .2-.6 usable, .7 broadcast
        const service = await serve([poolLayout("small", "10.0.0.0/29")]);
        expect(await fill(service, "small", 3)).toEqual(["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        await service.release("small-vm-0");
        await service.release("small-vm-1");
        expect(await ipOf(service, "d")).toBe("10.0.0.5");
        expect(await ipOf(service, "e")).toBe("10.0.0.6");
        expect(await ipOf(service, "f")).toBe("10.0.0.2");
        expect(await ipOf(service, "g")).toBe("10.0.0.3");
        await expectClean(service);
      });

      test("after wrapping it continues from the reused address, not from the start", async () => {
        const service = await serve([poolLayout("small", "10.0.0.0/29")]);
        await fill(service, "small", 5);
        await service.release("small-vm-1"); // .3
        await service.release("small-vm-3"); // .5
        expect(await ipOf(service, "x")).toBe("10.0.0.3");
        expect(await ipOf(service, "y")).toBe("10.0.0.5");
      });

      test("a requested address does not move the cursor, and is skipped later", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "pinned", ip: parseIpv4("10.0.0.3") });
        expect(await ipOf(service, "a")).toBe("10.0.0.2");
        expect(await ipOf(service, "b")).toBe("10.0.0.4");
      });
    });

    describe("lowest", () => {
      test("reuses the lowest free address", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24", { strategy: "lowest" })]);
        expect(await fill(service, "lab", 4)).toEqual(["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        await service.release("lab-vm-2"); // .4
        await service.release("lab-vm-1"); // .3
        expect(await ipOf(service, "a")).toBe("10.0.0.3");
        expect(await ipOf(service, "b")).toBe("10.0.0.4");
        expect(await ipOf(service, "c")).toBe("10.0.0.6");
      });

      test("reuses a freed address on the first page of a multi-page pool", async () => {
        const service = await serve([poolLayout("big", "10.0.0.0/19", { strategy: "lowest" })]);
        const ips = await fill(service, "big", 4100);
        expect(ips[4093]).toBe("10.0.15.255");
        expect(ips[4094]).toBe("10.0.16.0");
        await service.release("big-vm-500");
        expect(await ipOf(service, "again")).toBe(ips[500] as string);
        expect(await ipOf(service, "next")).toBe("10.0.16.6");
      });
    });

    describe("requested address", () => {
      const lab = () => poolLayout("lab", "10.0.0.0/24", { reserved: ["10.0.0.100-10.0.0.109"] });

      test("a free address is granted", async () => {
        const service = await serve([lab()]);
        const result = await service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.50") });
        expect(result.created).toBe(true);
        expect(formatIpv4(result.allocation.ip)).toBe("10.0.0.50");
        await expectClean(service);
      });

      test("the last usable address before the broadcast can be requested", async () => {
        const service = await serve([lab()]);
        const result = await service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.254") });
        expect(formatIpv4(result.allocation.ip)).toBe("10.0.0.254");
      });

      test("an address held by another vm is ADDRESS_IN_USE and names the holder", async () => {
        const service = await serve([lab()]);
        await service.allocate({ vmId: "holder", ip: parseIpv4("10.0.0.50") });
        const error = await rejection(() => service.allocate({ vmId: "vm-2", ip: parseIpv4("10.0.0.50") }));
        expect(error.code).toBe("ADDRESS_IN_USE");
        expect(error.status).toBe(409);
        expect(error.message).toContain("holder");
        expect(service.get("vm-2")).rejects.toThrow();
      });

      test.each([
        ["the network address", "10.0.0.0"],
        ["the gateway", "10.0.0.1"],
        ["the broadcast address", "10.0.0.255"],
        ["the start of a reserved range", "10.0.0.100"],
        ["the end of a reserved range", "10.0.0.109"],
      ])("%s (%s) is INVALID_IP", async (_, ip) => {
        const service = await serve([lab()]);
        const error = await rejection(() => service.allocate({ vmId: "vm-1", ip: parseIpv4(ip) }));
        expect(error.code).toBe("INVALID_IP");
        expect(error.status).toBe(400);
        expect(error.message).toContain("reserved");
        expect((await service.stats()).allocated).toBe(0);
      });

      test.each(["10.0.1.2", "9.255.255.255", "192.168.0.2"])("%s outside the pool is INVALID_IP", async (ip) => {
        const service = await serve([lab()]);
        const error = await rejection(() => service.allocate({ vmId: "vm-1", ip: parseIpv4(ip) }));
        expect(error.code).toBe("INVALID_IP");
        expect(error.message).toContain("not in pool lab");
      });

      test("the same vm requesting the address it holds gets it again with created=false", async () => {
        const service = await serve([lab()]);
        await service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.50") });
        const again = await service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.50") });
        expect(again.created).toBe(false);
        expect(formatIpv4(again.allocation.ip)).toBe("10.0.0.50");
      });

      test("a vm holding another address is VM_HAS_OTHER_ADDRESS", async () => {
        const service = await serve([lab()]);
        expect(await ipOf(service, "vm-1")).toBe("10.0.0.2");
        const error = await rejection(() => service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.50") }));
        expect(error.code).toBe("VM_HAS_OTHER_ADDRESS");
        expect(error.status).toBe(409);
        expect(formatIpv4((await service.get("vm-1")).ip)).toBe("10.0.0.2");
      });

      test("rejected requests leave no trace in the store", async () => {
        const service = await serve([lab()]);
        await service.allocate({ vmId: "holder", ip: parseIpv4("10.0.0.50") });
        await rejection(() => service.allocate({ vmId: "x", ip: parseIpv4("10.0.0.50") }));
        await rejection(() => service.allocate({ vmId: "y", ip: parseIpv4("10.0.0.1") }));
        await rejection(() => service.allocate({ vmId: "holder", ip: parseIpv4("10.0.0.51") }));
        expect((await service.stats()).allocated).toBe(1);
        expect((await service.list({})).items.map((a) => a.vmId)).toEqual(["holder"]);
        await expectClean(service);
      });
    });

    describe("exhaustion and tiny pools", () => {
      test("a /29 hands out its 5 usable addresses, then POOL_EXHAUSTED", async () => {
        const service = await serve([poolLayout("small", "10.0.0.0/29")]);
        expect(await fill(service, "small", 5)).toEqual(range(2, 6, "10.0.0."));
        const error = await rejection(() => service.allocate({ vmId: "one-too-many" }));
        expect(error.code).toBe("POOL_EXHAUSTED");
        expect(error.status).toBe(503);
        expect(await service.stats()).toMatchObject({ allocated: 5, available: 0, usage: 100 });
      });

      test("an exhausted pool allocates again after a release", async () => {
        const service = await serve([poolLayout("small", "10.0.0.0/29", { strategy: "lowest" })]);
        await fill(service, "small", 5);
        await service.release("small-vm-2");
        expect(await ipOf(service, "late")).toBe("10.0.0.4");
        expect((await rejection(() => service.allocate({ vmId: "later" }))).code).toBe("POOL_EXHAUSTED");
      });

      test("a /30 with a gateway has exactly one address to give", async () => {
        const service = await serve([poolLayout("p2p", "10.0.0.4/30")]);
        expect(await ipOf(service, "vm-1")).toBe("10.0.0.6");
        expect((await rejection(() => service.allocate({ vmId: "vm-2" }))).code).toBe("POOL_EXHAUSTED");
      });

      test.each<Strategy>(["next-fit", "lowest"])("a /31 hands out both of its addresses (%s)", async (strategy) => {
        const service = await serve([poolLayout("link", "10.0.0.6/31", { strategy })]);
        expect(await fill(service, "link", 2)).toEqual(["10.0.0.6", "10.0.0.7"]);
        expect((await rejection(() => service.allocate({ vmId: "third" }))).code).toBe("POOL_EXHAUSTED");
        expect(await service.stats()).toMatchObject({ total: 2, allocated: 2, available: 0, gateway: null });
        await expectClean(service);
      });

      test.each<Strategy>(["next-fit", "lowest"])("a /32 hands out its one address (%s)", async (strategy) => {
        const service = await serve([poolLayout("host", "10.0.0.9/32", { strategy })]);
        expect(await ipOf(service, "vm-1")).toBe("10.0.0.9");
        expect((await rejection(() => service.allocate({ vmId: "vm-2" }))).code).toBe("POOL_EXHAUSTED");
        await service.release("vm-1");
        expect(await ipOf(service, "vm-3")).toBe("10.0.0.9");
      });

      test("a /32 address can be requested explicitly", async () => {
        const service = await serve([poolLayout("host", "10.0.0.9/32")]);
        const { allocation } = await service.allocate({ vmId: "vm-1", ip: parseIpv4("10.0.0.9") });
        expect(formatIpv4(allocation.ip)).toBe("10.0.0.9");
      });
    });

    describe("pools larger than one page", () => {
      test("filling the first page of a /19 moves allocation to the second page", async () => {
        const service = await serve([poolLayout("big", "10.0.0.0/19")]);
        const ips = await fill(service, "big", 4094);
        expect(ips[0]).toBe("10.0.0.2");
        expect(ips.at(-1)).toBe("10.0.15.255");
        expect(testBit((await store.read((view) => view.getSummary("big"))) as Uint32Array, 0)).toBe(false);
        expect(testBit((await store.read((view) => view.getSummary("big"))) as Uint32Array, 1)).toBe(true);
        expect(await ipOf(service, "second-page")).toBe("10.0.16.0");
        await expectClean(service);
      });

      test("an address released on a full earlier page is reused only after the later page fills", async () => {
        const service = await serve([poolLayout("big", "10.0.0.0/19")]);
        await fill(service, "big", 4200); // page 0 full, page 1 up to 10.0.16.105
        const released = await service.releaseByIp("10.0.0.100");
        expect(released.vmId).toBe("big-vm-98");
        expect(testBit((await store.read((view) => view.getSummary("big"))) as Uint32Array, 0)).toBe(true);
        // the cursor is on page 1: next-fit keeps going there
        expect(await ipOf(service, "after")).toBe("10.0.16.106");
        // the rest of page 1: 10.0.16.107 .. 10.0.31.254 (the broadcast 10.0.31.255 is never handed out)
        const rest = await fill(service, "big", 4095 - 107 - 1 + 1, "rest");
        expect(rest[0]).toBe("10.0.16.107");
        expect(rest.at(-1)).toBe("10.0.31.254");
        expect(testBit((await store.read((view) => view.getSummary("big"))) as Uint32Array, 1)).toBe(false);
        // nothing is free after the cursor: allocation wraps to the released address on page 0
        expect(await ipOf(service, "wrapped")).toBe("10.0.0.100");
        expect(await service.stats()).toMatchObject({ total: 8189, allocated: 8189, available: 0 });
        expect((await rejection(() => service.allocate({ vmId: "none-left" }))).code).toBe("POOL_EXHAUSTED");
        await expectClean(service);
      });

      test("a /8 (4096 pages) allocates from its first page and accepts a request on its last page", async () => {
        const service = await serve([poolLayout("huge", "10.0.0.0/8")]);
        expect(await service.stats()).toMatchObject({ total: 2 ** 24 - 3, allocated: 0 });
        expect(await ipOf(service, "first")).toBe("10.0.0.2");
        const last = await service.allocate({ vmId: "last", ip: parseIpv4("10.255.255.254") });
        expect(last.created).toBe(true);
        expect((await rejection(() => service.allocate({ vmId: "x", ip: parseIpv4("10.255.255.255") }))).code).toBe(
          "INVALID_IP",
        );
        expect(await ipOf(service, "second")).toBe("10.0.0.3");
        await expectClean(service);
      });

      test("a page that is entirely reserved is skipped", async () => {
        // /18: pages 0..3; page 1 (10.0.16.0-10.0.31.255) is reserved whole
        const service = await serve([poolLayout("big", "10.0.0.0/18", { reserved: ["10.0.16.0-10.0.31.255"] })]);
        await fill(service, "big", 4094);
        expect(await ipOf(service, "skips")).toBe("10.0.32.0");
      });

      test("a reserved range crossing a page boundary is never handed out, even when the pool is full", async () => {
        const service = await serve([poolLayout("big", "10.0.0.0/19", { reserved: ["10.0.15.250-10.0.16.5"] })]);
        const l = service.layout("big");
        expect(l.usableCount).toBe(8192 - 3 - 12);
        const ips = await fill(service, "big", l.usableCount);
        expect(new Set(ips).size).toBe(ips.length);
        const reserved = new Set([...range(250, 255, "10.0.15."), ...range(0, 5, "10.0.16.")]);
        expect(ips.filter((ip) => reserved.has(ip))).toEqual([]);
        expect(ips).not.toContain("10.0.0.0");
        expect(ips).not.toContain("10.0.0.1");
        expect(ips).not.toContain("10.0.31.255");
        expect(ips[4087]).toBe("10.0.15.249");
        expect(ips[4088]).toBe("10.0.16.6");
        expect((await rejection(() => service.allocate({ vmId: "none-left" }))).code).toBe("POOL_EXHAUSTED");
        await expectClean(service);
      });

      test.each<Strategy>(["next-fit", "lowest"])(
        "filling a small pool with reserved ranges never hands out a reserved address (%s)",
        async (strategy) => {
          const service = await serve([
            poolLayout("small", "10.0.0.32/27", {
              strategy,
              gateway: "10.0.0.62",
              reserved: ["10.0.0.33-10.0.0.35", "10.0.0.40", "10.0.0.50-10.0.0.52"],
            }),
          ]);
          const ips = await fill(service, "small", 32 - 2 - 1 - 7);
          expect(ips).toEqual([...range(36, 39, "10.0.0."), ...range(41, 49, "10.0.0."), ...range(53, 61, "10.0.0.")]);
          expect((await rejection(() => service.allocate({ vmId: "none-left" }))).code).toBe("POOL_EXHAUSTED");
        },
      );
    });

    describe("release", () => {
      test("release by vm frees the address and returns what was released", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1", hostname: "web" });
        const released = await service.release("vm-1");
        expect(released).toHaveLength(1);
        expect(released[0]).toMatchObject({ pool: "lab", vmId: "vm-1", ip: parseIpv4("10.0.0.2"), hostname: "web" });
        expect((await rejection(async () => await service.get("vm-1"))).code).toBe("NOT_FOUND");
        expect((await service.stats()).allocated).toBe(0);
        await expectClean(service);
      });

      test("release by vm without a pool releases it in every pool", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")]);
        await service.allocate({ vmId: "vm-1", pool: "a" });
        await service.allocate({ vmId: "vm-1", pool: "b" });
        const released = await service.release("vm-1");
        expect(released.map((a) => a.pool).sort()).toEqual(["a", "b"]);
      });

      test("release by vm in a named pool leaves the other pool's allocation", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")]);
        await service.allocate({ vmId: "vm-1", pool: "a" });
        await service.allocate({ vmId: "vm-1", pool: "b" });
        await service.release("vm-1", "b");
        expect((await service.get("vm-1")).pool).toBe("a");
        expect((await rejection(async () => await service.get("vm-1", "b"))).code).toBe("NOT_FOUND");
      });

      test("releasing a vm that holds nothing is NOT_FOUND", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const error = await rejection(() => service.release("ghost"));
        expect(error.code).toBe("NOT_FOUND");
        expect(error.status).toBe(404);
      });

      test("release by ip frees that address", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24", { strategy: "lowest" })]);
        await fill(service, "lab", 3);
        const released = await service.releaseByIp("10.0.0.3");
        expect(released).toMatchObject({ pool: "lab", vmId: "lab-vm-1", ip: parseIpv4("10.0.0.3") });
        expect(await ipOf(service, "new")).toBe("10.0.0.3");
        await expectClean(service);
      });

      test("release by ip of a free address is NOT_FOUND", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect((await rejection(() => service.releaseByIp("10.0.0.7"))).code).toBe("NOT_FOUND");
      });

      test("release by ip outside every pool is INVALID_IP", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect((await rejection(() => service.releaseByIp("192.168.0.1"))).code).toBe("INVALID_IP");
      });

      test("release by ip of malformed text is INVALID_IP", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect((await rejection(() => service.releaseByIp("10.0.0.07"))).code).toBe("INVALID_IP");
      });

      test("release by ip finds the pool that contains the address", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")]);
        await service.allocate({ vmId: "vm-1", pool: "b" });
        expect((await service.releaseByIp("10.0.1.2")).pool).toBe("b");
      });
    });

    describe("a preferred address (a running guest's lease, adopted)", () => {
      test("is taken when free, without moving the next-fit cursor", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const { allocation } = await service.allocate({ vmId: "running", preferredIp: parseIpv4("10.0.0.77") });
        expect(formatIpv4(allocation.ip)).toBe("10.0.0.77");
        expect(await ipOf(service, "next")).toBe("10.0.0.2");
        await expectClean(service);
      });

      test("held by another VM, reserved or outside the pool, is passed over for the usual choice", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "holder", ip: parseIpv4("10.0.0.77") });
        for (const [vmId, preferred] of [
          ["a", "10.0.0.77"],
          ["b", "10.0.0.1"],
          ["c", "192.168.9.9"],
        ] as const) {
          const { allocation } = await service.allocate({ vmId, preferredIp: parseIpv4(preferred) });
          expect(formatIpv4(allocation.ip)).not.toBe(preferred);
        }
        await expectClean(service);
      });
    });

    describe("a VM's name", () => {
      const UUID = "9f0c1a52-3b7e-4c1d-8e2f-0a1b2c3d4e5f";

      test("finds the VM as its vm_id does, and releasing by name releases it", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        const { allocation } = await service.allocate({ vmId: UUID, name: "web_1" });
        expect(await service.get("web_1")).toEqual(allocation);
        const released = await service.release("web_1");
        expect(released.map((a) => a.vmId)).toEqual([UUID]);
        expect(await service.find("web_1")).toBeUndefined();
        expect(await service.find(UUID)).toBeUndefined();
      });

      test("a repeat with another name moves the alias: the old name finds nothing", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: UUID, name: "old" });
        const { allocation, created } = await service.allocate({ vmId: UUID, name: "new" });
        expect(created).toBe(false);
        expect(allocation.name).toBe("new");
        expect(await service.find("old")).toBeUndefined();
        expect((await service.get("new")).vmId).toBe(UUID);
      });

      test("a domain defined again under its old name is found by it; the old VM keeps its own address", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: UUID, name: "web" });
        const other = "0b6e6b8a-0000-4000-8000-000000000002";
        await service.allocate({ vmId: other, name: "web" });
        expect((await service.get("web")).vmId).toBe(other);
        await service.release(UUID);
        // Releasing the old VM leaves the name with the new one.
        expect((await service.get("web")).vmId).toBe(other);
      });

      test("fsck follows names: a name standing for a VM that does not carry it is reported", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: UUID, name: "Web 🌐" });
        await expectClean(service);
        await store.write((view) => view.putName("lab", "ghost", UUID));
        expect((await store.read((view) => checkPool(view, service.layout()))).problems).toEqual([
          `name "ghost" stands for ${UUID}, whose allocation does not carry it`,
        ]);
      });

      test("a vm_id is never hidden by another VM's name", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "alpha" });
        await service.allocate({ vmId: UUID, name: "alpha" });
        expect((await service.get("alpha")).vmId).toBe("alpha");
      });
    });

    describe("release from a host", () => {
      test("the VM's own host releases it; a host it has left gets VM_ON_OTHER_HOST and nothing changes", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1", host: "hv1" });
        await service.allocate({ vmId: "vm-1", host: "hv2" });
        const error = await rejection(() => service.release("vm-1", undefined, { fromHost: "hv1" }));
        expect(error).toMatchObject({ code: "VM_ON_OTHER_HOST", status: 409 });
        expect((await service.get("vm-1")).host).toBe("hv2");
        expect(await service.release("vm-1", undefined, { fromHost: "hv2" })).toHaveLength(1);
        await expectClean(service);
      });

      test("a VM with no recorded host is released by any host", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1" });
        expect(await service.release("vm-1", undefined, { fromHost: "hv9" })).toHaveLength(1);
      });
    });

    describe("get", () => {
      test("looks in the default pool first, then the others", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24"), poolLayout("b", "10.0.1.0/24")], "b");
        await service.allocate({ vmId: "vm-1", pool: "a" });
        expect((await service.get("vm-1")).pool).toBe("a");
        await service.allocate({ vmId: "vm-1", pool: "b" });
        expect((await service.get("vm-1")).pool).toBe("b");
        expect((await service.get("vm-1", "a")).pool).toBe("a");
      });
    });

    describe("list", () => {
      async function twoPools(): Promise<PoolService> {
        const service = await serve([poolLayout("a", "192.168.0.0/24"), poolLayout("b", "10.0.0.0/24")]);
        for (const ip of ["192.168.0.9", "192.168.0.3", "192.168.0.200"]) {
          await service.allocate({ vmId: `a-${ip}`, pool: "a", ip: parseIpv4(ip) });
        }
        for (const ip of ["10.0.0.7", "10.0.0.5"])
          await service.allocate({ vmId: `b-${ip}`, pool: "b", ip: parseIpv4(ip) });
        return service;
      }
      const ips = (items: readonly Allocation[]) => items.map((a) => formatIpv4(a.ip));

      test("lists every allocation in pool order then address order", async () => {
        const service = await twoPools();
        const page = await service.list({});
        expect(ips(page.items)).toEqual(["192.168.0.3", "192.168.0.9", "192.168.0.200", "10.0.0.5", "10.0.0.7"]);
        expect(page.next).toBeUndefined();
        expect(page.items[0]).toMatchObject({ pool: "a", vmId: "a-192.168.0.3" });
      });

      test("a limit returns a page and the address to continue after, across pools", async () => {
        const service = await twoPools();
        const first = await service.list({ limit: 2 });
        expect(ips(first.items)).toEqual(["192.168.0.3", "192.168.0.9"]);
        expect(first.next).toBe("192.168.0.9");
        const second = await service.list({ limit: 2, after: first.next as string });
        expect(ips(second.items)).toEqual(["192.168.0.200", "10.0.0.5"]);
        expect(second.next).toBe("10.0.0.5");
        const third = await service.list({ limit: 2, after: second.next as string });
        expect(ips(third.items)).toEqual(["10.0.0.7"]);
        expect(third.next).toBeUndefined();
      });

      test("a page ending on a pool's last allocation continues in the next pool", async () => {
        const service = await twoPools();
        const first = await service.list({ limit: 3 });
        expect(first.next).toBe("192.168.0.200");
        expect(ips((await service.list({ after: "192.168.0.200" })).items)).toEqual(["10.0.0.5", "10.0.0.7"]);
      });

      test("a limit equal to the number of allocations has no next page", async () => {
        const service = await twoPools();
        const page = await service.list({ limit: 5 });
        expect(page.items).toHaveLength(5);
        expect(page.next).toBeUndefined();
      });

      test("after an address that is not allocated continues from the next allocated one", async () => {
        const service = await twoPools();
        expect(ips((await service.list({ after: "192.168.0.4", limit: 1 })).items)).toEqual(["192.168.0.9"]);
      });

      test("a pool filter lists only that pool", async () => {
        const service = await twoPools();
        expect(ips((await service.list({ pool: "b" })).items)).toEqual(["10.0.0.5", "10.0.0.7"]);
        const page = await service.list({ pool: "a", limit: 1, after: "192.168.0.3" });
        expect(ips(page.items)).toEqual(["192.168.0.9"]);
        expect(page.next).toBe("192.168.0.9");
      });

      test("after an address outside the listed pools is INVALID_IP", async () => {
        const service = await twoPools();
        expect((await rejection(async () => await service.list({ after: "172.16.0.1" }))).code).toBe("INVALID_IP");
        expect((await rejection(async () => await service.list({ pool: "b", after: "192.168.0.3" }))).code).toBe(
          "INVALID_IP",
        );
      });

      test("an empty service lists nothing", async () => {
        const service = await serve([poolLayout("a", "10.0.0.0/24")]);
        expect(await service.list({ limit: 10 })).toEqual({ items: [] });
      });
    });

    describe("stats", () => {
      test("an empty /24 has 253 usable addresses", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect(await service.stats()).toEqual({
          pool: "lab",
          network: "10.0.0.0/24",
          gateway: "10.0.0.1",
          total: 253,
          allocated: 0,
          available: 253,
          usage: 0,
        });
      });

      test("counts allocations and releases", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24", { reserved: ["10.0.0.10-10.0.0.19"] })]);
        await fill(service, "lab", 5);
        await service.release("lab-vm-0");
        const stats = await service.stats("lab");
        expect(stats).toMatchObject({ total: 243, allocated: 4, available: 239 });
        expect(stats.usage).toBeCloseTo((4 / 243) * 100, 10);
      });

      test("repeated allocations of the same vm are counted once", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1" });
        await service.allocate({ vmId: "vm-1" });
        expect((await service.stats()).allocated).toBe(1);
      });

      test("an unknown pool is POOL_NOT_FOUND", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect((await rejection(async () => await service.stats("nope"))).code).toBe("POOL_NOT_FOUND");
      });
    });

    describe("checkPool", () => {
      test("reports no problems after a mixed sequence of allocations and releases", async () => {
        const service = await serve([
          poolLayout("a", "10.0.0.0/24", { reserved: ["10.0.0.20-10.0.0.29"] }),
          poolLayout("b", "10.1.0.0/19", { strategy: "lowest" }),
        ]);
        await fill(service, "a", 40);
        await fill(service, "b", 4200);
        await service.allocate({ vmId: "pinned", pool: "a", ip: parseIpv4("10.0.0.250") });
        await service.allocate({ vmId: "pinned", pool: "b", ip: parseIpv4("10.1.30.1") });
        await service.release("a-vm-3", "a");
        await service.release("pinned");
        await service.releaseByIp("10.1.0.77");
        await service.releaseByIp("10.1.16.2");
        await service.allocate({ vmId: "late", pool: "b" });
        await rejection(() => service.allocate({ vmId: "late", pool: "b", ip: parseIpv4("10.1.0.5") }));
        const a = await store.read((view) => checkPool(view, service.layout("a")));
        const b = await store.read((view) => checkPool(view, service.layout("b")));
        expect(a).toEqual({ pool: "a", allocations: 39, problems: [] });
        expect(b).toEqual({ pool: "b", allocations: 4199, problems: [] });
      });

      test("a pool's report is not affected by a pool whose name starts with the same name", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24"), poolLayout("lab-2", "10.0.1.0/24")]);
        await service.allocate({ vmId: "vm-1", pool: "lab-2" });
        expect(await store.read((view) => checkPool(view, service.layout("lab")))).toEqual({
          pool: "lab",
          allocations: 0,
          problems: [],
        });
        expect(await store.read((view) => checkPool(view, service.layout("lab-2")))).toEqual({
          pool: "lab-2",
          allocations: 1,
          problems: [],
        });
      });

      test("a pool with no stored state is reported", async () => {
        expect(
          (await store.read((view) => checkPool(view, poolLayout("never-started", "10.0.0.0/24")))).problems,
        ).toEqual(["no stored counters"]);
      });
    });

    describe("adopting the configured layouts at start", () => {
      test("restarting on the same store with the same layout keeps allocations and the cursor", async () => {
        const layouts = () => [poolLayout("lab", "10.0.0.0/24"), poolLayout("big", "10.1.0.0/19")];
        let service = await serve(layouts());
        await fill(service, "lab", 3);
        await fill(service, "big", 4100);
        await service.release("lab-vm-1");
        await stores.reopen(); // as a daemon restart does
        service = await serve(layouts());
        expect(formatIpv4((await service.get("lab-vm-0")).ip)).toBe("10.0.0.2");
        expect(formatIpv4((await service.get("lab-vm-2")).ip)).toBe("10.0.0.4");
        expect((await service.stats("lab")).allocated).toBe(2);
        expect((await service.stats("big")).allocated).toBe(4100);
        expect(await ipOf(service, "after-restart", "lab")).toBe("10.0.0.5");
        expect(await ipOf(service, "after-restart", "big")).toBe("10.1.16.6");
        await expectClean(service);
      });

      test("changing the CIDR of a pool with allocations is POOL_STATE_CONFLICT", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1" });
        await stores.reopen();
        const moved = new PoolService(store, [poolLayout("lab", "10.0.8.0/24")], "lab");
        const error = await rejection(() => adoptPoolLayouts(store, moved.layouts));
        expect(error).toBeInstanceOf(PoolStateConflictError);
        expect(error.code).toBe("POOL_STATE_CONFLICT");
        expect(error.message).toContain("10.0.0.0/24");
        expect(error.message).toContain("10.0.8.0/24");
      });

      test("a refused start changes nothing: the old configuration still starts with its allocations", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await service.allocate({ vmId: "vm-1" });
        await rejection(() => adoptPoolLayouts(store, [poolLayout("lab", "10.0.8.0/24")]));
        const restored = await serve([poolLayout("lab", "10.0.0.0/24")]);
        expect(formatIpv4((await restored.get("vm-1")).ip)).toBe("10.0.0.2");
        expect((await restored.stats()).allocated).toBe(1);
        await expectClean(restored);
      });

      test("a full pool grows in place: every allocation kept, its stored pages untouched, the new addresses handed out", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await fill(service, "lab", 253); // .2-.254: full
        expect(await rejection(() => service.allocate({ vmId: "one-more" }))).toMatchObject({ code: "POOL_EXHAUSTED" });
        const pageBefore = Buffer.from(
          ((await store.read((view) => view.getPage("lab", 0))) as Uint32Array).buffer,
        ).toString("hex");
        await stores.reopen();
        const grown = await serve([poolLayout("lab", "10.0.0.0/23")]);
        expect(await grown.stats()).toMatchObject({ network: "10.0.0.0/23", allocated: 253, total: 509 });
        expect(
          Buffer.from(((await store.read((view) => view.getPage("lab", 0))) as Uint32Array).buffer).toString("hex"),
        ).toBe(pageBefore);
        expect(formatIpv4((await grown.get("lab-vm-0")).ip)).toBe("10.0.0.2");
        expect(formatIpv4((await grown.get("lab-vm-252")).ip)).toBe("10.0.0.254");
        // Next-fit goes on after .254: the old broadcast address is an ordinary one in the /23.
        expect(await ipOf(grown, "one-more")).toBe("10.0.0.255");
        expect(await ipOf(grown, "two-more")).toBe("10.0.1.0");
        await expectClean(grown);
      });

      test("a pool shrinks in place past a page boundary, its reservations checked after the pages it loses are dropped", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/19")]);
        await fill(service, "lab", 10);
        await stores.reopen();
        const shrunk = await serve([poolLayout("lab", "10.0.0.0/20", { reserved: ["10.0.0.100"] })]);
        expect(await shrunk.stats()).toMatchObject({ network: "10.0.0.0/20", allocated: 10 });
        expect(
          (await store.read((view) => [...view.pageIndexes("lab")])).every(
            (index) => index < shrunk.layout("lab").pageCount,
          ),
        ).toBe(true);
        await expectClean(shrunk);
      });

      test("a pool shrinks in place when the part it loses is empty", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/22")]);
        await fill(service, "lab", 300); // .0.2 to .1.45
        await service.release("lab-vm-299");
        await stores.reopen();
        const shrunk = await serve([poolLayout("lab", "10.0.0.0/23")]);
        expect(await shrunk.stats()).toMatchObject({ network: "10.0.0.0/23", allocated: 299 });
        expect(formatIpv4((await shrunk.get("lab-vm-298")).ip)).toBe("10.0.1.44");
        expect(
          (await store.read((view) => [...view.pageIndexes("lab")])).every(
            (index) => index < shrunk.layout("lab").pageCount,
          ),
        ).toBe(true);
        await expectClean(shrunk);
      });

      test("shrinking over an allocated address is POOL_STATE_CONFLICT naming it, and changes nothing", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/23")]);
        await fill(service, "lab", 300); // up to 10.0.1.45
        await stores.reopen();
        const error = await rejection(() => adoptPoolLayouts(store, [poolLayout("lab", "10.0.0.0/24")]));
        expect(error).toBeInstanceOf(PoolStateConflictError);
        expect(error.message).toBe(
          "pools.lab.cidr shrinks from 10.0.0.0/23 to 10.0.0.0/24, but 10.0.1.0, past the new end, is allocated to lab-vm-254; release it first or keep the cidr",
        );
        const kept = await serve([poolLayout("lab", "10.0.0.0/23")]);
        expect((await kept.stats()).allocated).toBe(300);
        await expectClean(kept);
      });

      test("changing the CIDR of an empty pool is accepted and starts afresh", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await fill(service, "lab", 10);
        for (let i = 0; i < 10; i++) await service.release(`lab-vm-${i}`);
        await stores.reopen();
        const moved = await serve([poolLayout("lab", "10.0.8.0/22")]);
        expect(await moved.stats()).toMatchObject({ network: "10.0.8.0/22", allocated: 0, total: 1021 });
        expect(await ipOf(moved, "vm-1")).toBe("10.0.8.2");
        await expectClean(moved);
      });

      test("a new reserved range covering an allocated address is POOL_STATE_CONFLICT", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await fill(service, "lab", 5); // .2-.6
        await stores.reopen();
        const error = await rejection(() =>
          adoptPoolLayouts(store, [poolLayout("lab", "10.0.0.0/24", { reserved: ["10.0.0.5-10.0.0.20"] })]),
        );
        expect(error).toBeInstanceOf(PoolStateConflictError);
        expect(error.code).toBe("POOL_STATE_CONFLICT");
        expect(error.message).toContain("10.0.0.5");
        expect(error.message).toContain("lab-vm-3");
      });

      test("moving the gateway onto an allocated address is POOL_STATE_CONFLICT", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await fill(service, "lab", 5);
        const error = await rejection(() =>
          adoptPoolLayouts(store, [poolLayout("lab", "10.0.0.0/24", { gateway: "10.0.0.4" })]),
        );
        expect(error.code).toBe("POOL_STATE_CONFLICT");
      });

      test("a new reserved range over free addresses is accepted and never handed out", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/29")]);
        await fill(service, "lab", 1); // .2
        await stores.reopen();
        const reserved = await serve([poolLayout("lab", "10.0.0.0/29", { reserved: ["10.0.0.3-10.0.0.5"] })]);
        expect(await reserved.stats()).toMatchObject({ total: 2, allocated: 1, available: 1 });
        expect(await ipOf(reserved, "vm-next")).toBe("10.0.0.6");
        expect((await rejection(() => reserved.allocate({ vmId: "none-left" }))).code).toBe("POOL_EXHAUSTED");
        expect((await rejection(() => reserved.allocate({ vmId: "x", ip: parseIpv4("10.0.0.4") }))).code).toBe(
          "INVALID_IP",
        );
        await expectClean(reserved);
      });

      test("removing a reservation that filled the pool makes its addresses available", async () => {
        const full = await serve([poolLayout("lab", "10.0.0.0/29", { reserved: ["10.0.0.2-10.0.0.6"] })]);
        expect((await rejection(() => full.allocate({ vmId: "vm-1" }))).code).toBe("POOL_EXHAUSTED");
        const open = await serve([poolLayout("lab", "10.0.0.0/29")]);
        expect(await ipOf(open, "vm-1")).toBe("10.0.0.2");
        await expectClean(open);
      });

      test("a pool removed from the config that still has allocations is POOL_STATE_CONFLICT", async () => {
        const service = await serve([poolLayout("keep", "10.0.0.0/24"), poolLayout("gone", "10.0.1.0/24")]);
        await service.allocate({ vmId: "vm-1", pool: "gone" });
        await stores.reopen();
        const error = await rejection(() => adoptPoolLayouts(store, [poolLayout("keep", "10.0.0.0/24")]));
        expect(error).toBeInstanceOf(PoolStateConflictError);
        expect(error.code).toBe("POOL_STATE_CONFLICT");
        expect(error.message).toContain("gone");
        expect((await store.read((view) => view.poolNames())).sort()).toEqual(["gone", "keep"]);
      });

      test("a pool removed from the config without allocations is dropped", async () => {
        const gone = poolLayout("gone", "10.0.32.0/19");
        const service = await serve([poolLayout("keep", "10.0.0.0/24"), gone]);
        await fill(service, "gone", 5000);
        await store.write((view) => {
          for (let i = 0; i < 5000; i++) releaseInTransaction(view, gone, `gone-vm-${i}`);
        });
        expect(await store.read((view) => [...view.pageIndexes("gone")])).toEqual([0, 1]);
        expect((await service.stats("gone")).allocated).toBe(0);
        await stores.reopen();
        const kept = await serve([poolLayout("keep", "10.0.0.0/24")]);
        expect(await store.read((view) => view.poolNames())).toEqual(["keep"]);
        expect(await store.read((view) => view.getStamp("gone"))).toBeUndefined();
        expect(await store.read((view) => view.getSummary("gone"))).toBeUndefined();
        expect(await store.read((view) => [...view.pageIndexes("gone")])).toEqual([]);
        expect((await rejection(async () => await kept.stats("gone"))).code).toBe("POOL_NOT_FOUND");
      });

      test("a dropped pool that is configured again starts empty", async () => {
        await serve([poolLayout("keep", "10.0.0.0/24"), poolLayout("back", "10.0.1.0/24")]);
        await serve([poolLayout("keep", "10.0.0.0/24")]);
        const service = await serve([poolLayout("keep", "10.0.0.0/24"), poolLayout("back", "10.0.1.0/24")]);
        expect((await service.stats("back")).allocated).toBe(0);
        expect(await ipOf(service, "vm-1", "back")).toBe("10.0.1.2");
      });

      test("changing only the strategy keeps the stored state", async () => {
        const service = await serve([poolLayout("lab", "10.0.0.0/24")]);
        await fill(service, "lab", 3);
        await service.release("lab-vm-0");
        const lowest = await serve([poolLayout("lab", "10.0.0.0/24", { strategy: "lowest" })]);
        expect((await lowest.stats()).allocated).toBe(2);
        expect(await ipOf(lowest, "vm-new")).toBe("10.0.0.2");
      });
    });
  });
}
