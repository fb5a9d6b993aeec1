/**
 * A real store in a temporary directory with one VM pool and one public (EIP) pool adopted
 * by it, and the pool and EIP services over them: the common ground of the service-level suites.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EipService, eipPoolKey } from "../../src/eip/service.ts";
import { parseCidr } from "../../src/net/ipv4.ts";
import { PoolLayout } from "../../src/pool/layout.ts";
import { PoolService } from "../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../src/pool/startup.ts";
import { LmdbStore } from "../../src/store/lmdb.ts";

export interface StoreFixture {
  readonly dir: string;
  readonly store: LmdbStore;
  readonly vm: PoolLayout;
  readonly publicPool: PoolLayout;
  readonly pools: PoolService;
  readonly eips: EipService;
  /** Closes the store and removes its directory. */
  dispose(): Promise<void>;
}

/** VM pool "vms" over `vmCidr` (gateway: its first address), EIP pool "public" over 100.64.0.0/24. */
export function storeFixture(vmCidr = "192.168.100.0/24"): StoreFixture {
  const dir = mkdtempSync(join(tmpdir(), "ippool-fixture-"));
  const store = new LmdbStore(dir);
  const cidr = parseCidr(vmCidr);
  const vm = new PoolLayout({ name: "vms", cidr, gateway: cidr.base + 1, reserved: [], strategy: "next-fit" });
  const publicPool = new PoolLayout({
    name: eipPoolKey("public"),
    cidr: parseCidr("100.64.0.0/24"),
    gateway: null,
    reserved: [],
    strategy: "next-fit",
  });
  adoptPoolLayouts(store, [vm, publicPool]);
  return {
    dir,
    store,
    vm,
    publicPool,
    pools: new PoolService(store, [vm], "vms"),
    eips: new EipService(store, new Map([["public", publicPool]]), "public"),
    async dispose() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
