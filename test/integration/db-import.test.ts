/**
 * `ippool db import`: a host's LMDB store moved into a fleet's database, with the compiled daemon
 * on both sides and a real PostgreSQL 15 started for this file. A daemon on the database answers
 * as the old one did; a running daemon's store and a database that holds anything are refused.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { configToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type Postgres, startPostgres } from "../support/postgres.ts";

const ACME = "acme-import-key";
const CONFIG = configToml({
  pools: [
    { name: "vms", cidr: "10.40.0.0/24", gateway: "10.40.0.1" },
    { name: "lab", cidr: "10.41.0.0/23", gateway: "10.41.0.1", strategy: "lowest" },
  ],
  eipPools: { public: "100.70.0.0/28" },
  projects: [{ name: "acme", apiKey: ACME, quota: 5 }],
});
const acme = { "x-api-key": ACME, "content-type": "application/json" };

let pg: Postgres;
let url: string;
beforeAll(async () => {
  pg = await startPostgres();
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
  await admin`CREATE DATABASE fleet`;
  await admin.end();
  url = pg.url.replace(/\/postgres$/, "/fleet");
  expect((await runToExit(["db", "migrate", "--database-url", url])).code).toBe(0);
});
afterAll(async () => {
  await pg.stop();
});

test("a stopped daemon's store is copied whole, and a daemon on the database answers as the old one did", async () => {
  const old = await Daemon.start({ config: CONFIG });
  for (let i = 0; i < 20; i++) {
    const body = { vm_id: `vm-${i}`, hostname: `web-${i}`, ...(i % 4 === 0 ? { name: `named-${i}` } : {}) };
    expect((await old.post("/api/v1/ip/allocate", body)).status).toBe(201);
  }
  for (let i = 0; i < 5; i++) await old.post("/api/v1/ip/allocate", { vm_id: `lab-${i}`, pool: "lab" });
  for (const vmId of ["vm-3", "vm-7", "lab-1"]) await old.json(`/api/v1/ip/release/${vmId}`, { method: "DELETE" });
  const eipIds = new Map<string, string>();
  for (const key of ["first", "second"]) {
    const body = JSON.stringify({ idempotency_key: key });
    const created = await old.fetch("/elastic-ips", { method: "POST", headers: acme, body });
    expect(created.status).toBe(201);
    eipIds.set(key, ((await created.json()) as { id: string }).id);
  }
  const allocations = (await old.json("/api/v1/ip/allocations")).body;
  const eips = await (await old.fetch("/elastic-ips", { headers: acme })).json();

  const busy = await runToExit(["db", "import", old.dir, "--database-url", url]);
  expect(busy.code).not.toBe(0);
  expect(busy.stderr).toContain("stop it first");

  expect(await old.stop()).toBe(0);
  const imported = await runToExit(["db", "import", old.dir], { IPPOOL_DATABASE_URL: url });
  expect(imported.stderr).toBe("");
  expect(imported.stdout).toBe(
    `imported 3 pools, 24 allocations and 2 elastic IPs from ${old.dir}; read back, the database matches the store\n`,
  );
  expect(imported.code).toBe(0);

  const fleet = await Daemon.start({ config: `${CONFIG}\n[store]\nbackend = "postgres"\nurl = "${url}"\n` });
  try {
    expect((await fleet.json("/api/v1/ip/allocations")).body).toEqual(allocations);
    expect(await (await fleet.fetch("/elastic-ips", { headers: acme })).json()).toEqual(eips);
    expect((await fleet.json("/api/v1/ip/named-8")).body.vm_id).toBe("vm-8");
    // A repeat of an imported idempotency key answers the imported EIP.
    const replay = await fleet.fetch("/elastic-ips", {
      method: "POST",
      headers: acme,
      body: JSON.stringify({ idempotency_key: "first" }),
    });
    expect(((await replay.json()) as { id: string }).id).toBe(eipIds.get("first") as string);
    // Next-fit goes on after the last address handed out; nothing imported is handed out again.
    const next = await fleet.post("/api/v1/ip/allocate", { vm_id: "after-import" });
    expect(allocations.map((a: { ip: string }) => a.ip)).not.toContain(next.body.ip);
    const fsck = await runToExit(["fsck", "--config", fleet.configPath]);
    expect([fsck.code, fsck.stdout]).toEqual([0, expect.stringContaining("vms: 19 allocations, 0 problems")]);
  } finally {
    await fleet.dispose();
  }

  const again = await runToExit(["db", "import", old.dir, "--database-url", url]);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain("the database already holds 3 pools and 2 elastic IPs");
  await old.dispose();
});
