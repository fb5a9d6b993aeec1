/**
 * Both store backends for the service-level suites, as go-ipam runs each of its tests against
 * each of its backends: the embedded LMDB store in a temporary directory, and the shared
 * PostgreSQL store over a real PostgreSQL 15 cluster that the suite starts (test/support/postgres.ts),
 * with a schema of its own for every test, migrated as `ippool db migrate` does.
 */
import { afterAll, afterEach, beforeAll, beforeEach } from "bun:test";
import postgres from "postgres";
import { LmdbStore } from "../../src/store/lmdb.ts";
import { migrate } from "../../src/store/postgres/schema.ts";
import { PostgresStore } from "../../src/store/postgres/store.ts";
import type { StepStore } from "../../src/store/steps.ts";
import { type Postgres, startPostgres } from "./postgres.ts";
import { TempStore } from "./store-fixture.ts";

export const STORE_BACKENDS = ["lmdb", "postgres"] as const;
export type StoreBackend = (typeof STORE_BACKENDS)[number];

interface OpenedStore {
  readonly store: StepStore;
  /** Closes the store and opens it again over the same state, as a daemon restart does. */
  reopen(): Promise<StepStore>;
  /** Another store over the same state, as another daemon (another process) has; closed with the test. */
  another(daemon: string): StepStore;
  dispose(): Promise<void>;
}

/**
 * A fresh store of `backend` for every test of the calling scope (a `describe` per backend), told
 * to `opened` before each test and after each `reopen`. For PostgreSQL, the cluster is started
 * once for the scope and stopped after it.
 */
export function backendPerTest(
  backend: StoreBackend,
  opened: (store: StepStore) => void | Promise<void>,
): { reopen(): Promise<void>; another(daemon: string): StepStore } {
  const open = backend === "lmdb" ? openLmdb : postgresOpener();
  let current: OpenedStore | undefined;
  beforeEach(async () => {
    current = await open();
    await opened(current.store);
  });
  afterEach(async () => {
    await current?.dispose();
    current = undefined;
  });
  const now = () => {
    if (!current) throw new Error("backendPerTest: no store outside a test");
    return current;
  };
  return {
    async reopen() {
      await opened(await now().reopen());
    },
    another: (daemon) => now().another(daemon),
  };
}

async function openLmdb(): Promise<OpenedStore> {
  const temp = new TempStore();
  const others: LmdbStore[] = [];
  return {
    get store() {
      return temp.store;
    },
    reopen: () => temp.reopen(),
    another() {
      const other = new LmdbStore(temp.dir);
      others.push(other);
      return other;
    },
    async dispose() {
      for (const other of others) await other.close();
      await temp.dispose();
    },
  };
}

/** Opens PostgreSQL stores, each in a schema of its own, on a cluster started before the scope's tests. */
function postgresOpener(): () => Promise<OpenedStore> {
  let cluster: Postgres | undefined;
  let schemas = 0;
  beforeAll(async () => {
    cluster = await startPostgres();
  });
  afterAll(async () => {
    await cluster?.stop();
  });
  return async () => {
    if (!cluster) throw new Error("the PostgreSQL cluster did not start");
    const url = `${cluster.url}?search_path=t${++schemas}`;
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    await admin`CREATE SCHEMA ${admin(`t${schemas}`)}`;
    await migrate(admin);
    await admin.end();
    let store = PostgresStore.connect(url, { daemon: "test-daemon" });
    const others: PostgresStore[] = [];
    return {
      get store() {
        return store;
      },
      async reopen() {
        await store.close();
        store = PostgresStore.connect(url, { daemon: "test-daemon" });
        return store;
      },
      another(daemon) {
        const other = PostgresStore.connect(url, { daemon });
        others.push(other);
        return other;
      },
      async dispose() {
        for (const other of others) await other.close();
        await store.close();
      },
    };
  };
}
