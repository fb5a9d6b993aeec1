/**
 * Real stores for the suites below the HTTP layer: a store in a temporary directory (`TempStore`,
 * or `storePerTest` for a fresh one in every test), pool layouts as the config defines them, and
 * `storeFixture`, one VM pool and one public (EIP) pool with the pool and EIP services over them:
 * the common ground of the service-level suites.
 */
import { afterEach, beforeEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EipService, eipPoolKey } from "../../src/eip/service.ts";
import { parseCidr, parseIpv4, parseRange } from "../../src/net/ipv4.ts";
import { PoolLayout, type Strategy } from "../../src/pool/layout.ts";
import { PoolService } from "../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../src/pool/startup.ts";
import { LmdbStore } from "../../src/store/lmdb.ts";
import type { StepStore } from "../../src/store/steps.ts";

/** An empty store in a new temporary directory. */
export class TempStore {
  readonly dir = mkdtempSync(join(tmpdir(), "ippool-store-"));
  private current = new LmdbStore(this.dir);

  get store(): LmdbStore {
    return this.current;
  }

  /** Closes the store and opens its directory again, as a daemon restart does; `whileClosed` runs in between. */
  async reopen(whileClosed?: (dir: string) => Promise<void> | void): Promise<LmdbStore> {
    await this.current.close();
    await whileClosed?.(this.dir);
    this.current = new LmdbStore(this.dir);
    return this.current;
  }

  /** Closes the store and removes its directory. */
  async dispose(): Promise<void> {
    await this.current.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A fresh `TempStore` for every test of the calling scope (file or describe), disposed of after
 * it. `opened` is told each store as it opens (before the scope's own beforeEach runs, and again
 * after a `reopen`): a suite keeps it in its own `store` variable, or builds its services over it.
 */
export function storePerTest(opened: (store: LmdbStore) => void | Promise<void>): {
  readonly dir: string;
  reopen(whileClosed?: (dir: string) => Promise<void> | void): Promise<void>;
} {
  let temp: TempStore | undefined;
  const current = () => {
    if (!temp) throw new Error("storePerTest: no store outside a test");
    return temp;
  };
  beforeEach(async () => {
    temp = new TempStore();
    await opened(temp.store);
  });
  afterEach(async () => {
    await temp?.dispose();
    temp = undefined;
  });
  return {
    get dir() {
      return current().dir;
    },
    async reopen(whileClosed) {
      await opened(await current().reopen(whileClosed));
    },
  };
}

export interface PoolOptions {
  /** Defaults to the first host address for /30 and larger, none for /31 and /32 (as the config does). */
  readonly gateway?: string | null;
  readonly reserved?: readonly string[];
  readonly strategy?: Strategy;
}

/** A VM pool's layout as the config would define it. */
export function poolLayout(name: string, cidrText: string, options: PoolOptions = {}): PoolLayout {
  const cidr = parseCidr(cidrText);
  let gateway: number | null;
  if (options.gateway === undefined) gateway = cidr.prefix >= 31 ? null : cidr.base + 1;
  else gateway = options.gateway === null ? null : parseIpv4(options.gateway);
  return new PoolLayout({
    name,
    cidr,
    gateway,
    reserved: (options.reserved ?? []).map(parseRange),
    strategy: options.strategy ?? "next-fit",
  });
}

/** A public (EIP) pool's layout, under its store name (`eip:<name>`), with no gateway. */
export function publicPoolLayout(name: string, cidr: string): PoolLayout {
  return poolLayout(eipPoolKey(name), cidr, { gateway: null });
}

export interface StoreFixture extends Services {
  readonly dir: string;
  readonly store: LmdbStore;
  /** Closes the store and removes its directory. */
  dispose(): Promise<void>;
}

export interface Services {
  readonly vm: PoolLayout;
  readonly publicPool: PoolLayout;
  readonly pools: PoolService;
  readonly eips: EipService;
}

/** VM pool "vms" over `vmCidr` (gateway: its first address), EIP pool "public" over 100.64.0.0/24, on `store`. */
export async function servicesOver(store: StepStore, vmCidr = "192.168.100.0/24"): Promise<Services> {
  const vm = poolLayout("vms", vmCidr);
  const publicPool = publicPoolLayout("public", "100.64.0.0/24");
  await adoptPoolLayouts(store, [vm, publicPool]);
  return {
    vm,
    publicPool,
    pools: new PoolService(store, [vm], "vms"),
    eips: new EipService(store, new Map([["public", publicPool]]), "public"),
  };
}

/** `servicesOver` a new LMDB store in a temporary directory. */
export async function storeFixture(vmCidr = "192.168.100.0/24"): Promise<StoreFixture> {
  const temp = new TempStore();
  const { store } = temp;
  return { dir: temp.dir, store, ...(await servicesOver(store, vmCidr)), dispose: () => temp.dispose() };
}
