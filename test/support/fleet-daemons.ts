/**
 * Several daemons' stores over one PostgreSQL database, as a fleet's daemons share one: each test
 * gets a schema of its own, migrated and with the layouts adopted, on a server the suite starts.
 * Registers the suite's hooks; call it at the top level of a test file.
 */
import { afterAll, afterEach, beforeAll, beforeEach } from "bun:test";
import postgres from "postgres";
import type { PoolLayout } from "../../src/pool/layout.ts";
import { PoolService } from "../../src/pool/service.ts";
import { adoptPoolLayouts } from "../../src/pool/startup.ts";
import { migrate } from "../../src/store/postgres/schema.ts";
import { PostgresStore } from "../../src/store/postgres/store.ts";
import { type Postgres, startPostgres } from "./postgres.ts";

export interface FleetDaemon {
  readonly store: PostgresStore;
  readonly pools: PoolService;
}

export interface FleetDaemons {
  /** A daemon's store and pool service over the test's database (closed after the test). */
  daemon(id: string, leaseSeconds?: number): FleetDaemon;
  /** Closes a daemon's store before the test ends (a daemon stopped). */
  stop(daemon: FleetDaemon): Promise<void>;
  /** The test's database, for what the test checks or changes by hand. */
  readonly sql: postgres.Sql;
}

export function fleetDaemonsPerTest(layouts: readonly PoolLayout[], defaultPool: string): FleetDaemons {
  let cluster: Postgres;
  let schemas = 0;
  let url: string;
  let sql: postgres.Sql | undefined;
  const stores: PostgresStore[] = [];

  const daemon = (id: string, leaseSeconds = 15): FleetDaemon => {
    const store = PostgresStore.connect(url, { daemon: id, leaseSeconds });
    stores.push(store);
    return { store, pools: new PoolService(store, layouts, defaultPool) };
  };

  beforeAll(async () => {
    cluster = await startPostgres();
  });
  afterAll(async () => {
    await cluster.stop();
  });
  beforeEach(async () => {
    const schema = `s${++schemas}`;
    url = `${cluster.url}?search_path=${schema}`;
    const opened = postgres(url, { max: 2, onnotice: () => {} });
    sql = opened;
    await opened`CREATE SCHEMA ${opened(schema)}`;
    await migrate(opened);
    await adoptPoolLayouts(daemon("setup").store, layouts);
  });
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    await sql?.end();
  });

  return {
    daemon,
    async stop({ store }) {
      stores.splice(stores.indexOf(store), 1);
      await store.close();
    },
    get sql() {
      if (sql === undefined) throw new Error("fleetDaemonsPerTest: no database outside a test");
      return sql;
    },
  };
}
