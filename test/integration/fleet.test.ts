/**
 * The compiled daemon on the shared store: its state is rows in PostgreSQL, two daemons on one
 * database never hand out an address twice and see each other's allocations, a database the
 * binary does not match is refused at start, and a database out of reach answers 503 and comes
 * back by itself.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type Postgres, startPostgres } from "../support/postgres.ts";

const POOLS = poolsToml([
  { name: "vms", cidr: "10.20.0.0/24", gateway: "10.20.0.1" },
  { name: "pair", cidr: "10.21.0.0/24", gateway: "10.21.0.1" },
]);

let pg: Postgres;
let sql: postgres.Sql;
const storeToml = (daemon: string, url = pg.url) =>
  `\n[store]\nbackend = "postgres"\nurl = "${url}"\ndaemon = "${daemon}"\n`;

beforeAll(async () => {
  pg = await startPostgres();
  const migrated = await runToExit(["db", "migrate", "--database-url", pg.url]);
  expect(migrated.code).toBe(0);
  sql = postgres(pg.url, { max: 2, onnotice: () => {} });
});
afterAll(async () => {
  await sql.end();
  await pg.stop();
});

describe("one daemon", () => {
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await Daemon.start({ config: POOLS + storeToml("hv1") });
  });
  afterAll(async () => {
    await daemon.dispose();
  });

  test("it says which store it runs on, and its allocations are rows in the database", async () => {
    expect(daemon.logs).toMatch(/started.*store[=:]"?postgres.*daemon[=:]"?hv1/);
    const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "web-1", hostname: "web" });
    expect(status).toBe(201);
    const rows = await sql<{ vm_id: string; ip: string; hostname: string }[]>`
      SELECT vm_id, ((ip >> 24) || '.' || ((ip >> 16) & 255) || '.' || ((ip >> 8) & 255) || '.' || (ip & 255)) AS ip,
             hostname FROM allocations WHERE pool = 'vms'`;
    expect([...rows]).toEqual([{ vm_id: "web-1", ip: body.ip, hostname: "web" }]);
  });

  test("with the database out of reach, changes and reads answer 503 STORE_UNAVAILABLE; it comes back by itself", async () => {
    await pg.halt();
    try {
      const refused = await daemon.post("/api/v1/ip/allocate", { vm_id: "web-2" });
      expect([refused.status, refused.body.code]).toEqual([503, "STORE_UNAVAILABLE"]);
      const lookup = await daemon.json("/api/v1/ip/web-1");
      expect([lookup.status, lookup.body.code]).toEqual([503, "STORE_UNAVAILABLE"]);
    } finally {
      await pg.resume();
    }
    const again = await daemon.post("/api/v1/ip/allocate", { vm_id: "web-2" });
    expect(again.status).toBe(201);
    expect((await daemon.json("/api/v1/ip/web-1")).status).toBe(200);
  });
});

describe("two daemons on one database", () => {
  let a: Daemon;
  let b: Daemon;
  beforeAll(async () => {
    [a, b] = await Promise.all([
      Daemon.start({ config: POOLS + storeToml("hv1") }),
      Daemon.start({ config: POOLS + storeToml("hv2") }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([a.dispose(), b.dispose()]);
  });

  test("allocating at once through both never hands out an address twice; each sees all of them", async () => {
    const answers = await Promise.all(
      Array.from({ length: 80 }, (_, i) =>
        (i % 2 === 0 ? a : b).post("/api/v1/ip/allocate", { vm_id: `vm-${i}`, pool: "pair" }),
      ),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(80).fill(201));
    const ips = answers.map((answer) => answer.body.ip as string);
    expect(new Set(ips).size).toBe(80);
    for (const daemon of [a, b]) {
      const listed = (await daemon.json("/api/v1/ip/allocations?pool=pair")).body as { ip: string }[];
      expect(listed.map((allocation) => allocation.ip).sort()).toEqual([...ips].sort());
      expect((await daemon.json("/api/v1/ip/stats?pool=pair")).body).toMatchObject({ allocated: 80 });
    }
  });

  test("one VM asked for through both at once gets one address; either releases it", async () => {
    const [first, second] = await Promise.all([
      a.post("/api/v1/ip/allocate", { vm_id: "shared" }),
      b.post("/api/v1/ip/allocate", { vm_id: "shared" }),
    ]);
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(first.body.ip).toBe(second.body.ip);
    expect((await b.json("/api/v1/ip/release/shared", { method: "DELETE" })).status).toBe(200);
    expect((await a.json("/api/v1/ip/shared")).status).toBe(404);
  });
});

describe("a daemon killed mid-load", () => {
  test("kill -9 loses no acknowledged allocation: after its restart each VM has the address it was answered", async () => {
    const config = POOLS + storeToml("hv1");
    let daemon = await Daemon.start({ config });
    const acknowledged = new Map<string, string>();
    const load = Array.from({ length: 8 }, async (_, worker) => {
      for (let i = 0; ; i++) {
        const vmId = `kill-${worker}-${i}`;
        try {
          const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: vmId, pool: "pair" });
          if (status === 201) acknowledged.set(vmId, body.ip);
        } catch {
          return; // the daemon is gone: this request's answer never came
        }
      }
    });
    await Bun.sleep(300);
    await daemon.kill9();
    await Promise.all(load);
    expect(acknowledged.size).toBeGreaterThan(10);
    daemon = await Daemon.start({ config, dir: daemon.dir });
    try {
      for (const [vmId, ip] of acknowledged) {
        const { status, body } = await daemon.json(`/api/v1/ip/${vmId}?pool=pair`);
        expect([vmId, status, body.ip]).toEqual([vmId, 200, ip]);
      }
      const out = await runToExit(["fsck", "--config", daemon.configPath]);
      expect([out.code, out.stdout]).toEqual([0, expect.stringContaining("pair: ")]);
    } finally {
      await daemon.dispose();
    }
  });
});

describe("a database the binary does not match is refused at start", () => {
  const dir = mkdtempSync(join(tmpdir(), "ippool-fleet-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function startOn(url: string) {
    const config = join(dir, "ippool.toml");
    writeFileSync(config, `[server]\nlisten = "127.0.0.1:0"\nsocket = ""\n${POOLS}${storeToml("hv1", url)}`);
    return runToExit(["--config", config]);
  }

  test("a database not migrated: exit 2, naming ippool db migrate", async () => {
    await sql`CREATE DATABASE empty`;
    const result = await startOn(pg.url.replace(/\/postgres$/, "/empty"));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("schema is version 0, this ippool needs 3: run ippool db migrate");
  });

  test("a database migrated by a newer ippool: exit 2, and nothing in it changes", async () => {
    await sql`UPDATE ippool_schema SET version = 99`;
    try {
      const result = await startOn(pg.url);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("schema is version 99, newer than this ippool's 3");
    } finally {
      await sql`UPDATE ippool_schema SET version = 3`;
    }
  });

  test("no database where the URL points: exit 3", async () => {
    const result = await startOn("postgres://test@127.0.0.1:1/postgres");
    expect(result.code).toBe(3);
    expect(result.stderr).toContain("cannot use the database");
  });
});
