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
import { SCHEMA_VERSION } from "../../src/store/postgres/schema.ts";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type Postgres, startPostgres } from "../support/postgres.ts";
import { eventually } from "../support/processes.ts";
import { parseExposition, sampleValue } from "../support/prometheus.ts";

const POOLS = poolsToml([
  { name: "vms", cidr: "10.20.0.0/24", gateway: "10.20.0.1" },
  { name: "pair", cidr: "10.21.0.0/24", gateway: "10.21.0.1" },
]);

let pg: Postgres;
let sql: postgres.Sql;
const storeToml = (daemon: string, url = pg.url, leaseSeconds?: number) =>
  `\n[store]\nbackend = "postgres"\nurl = "${url}"\ndaemon = "${daemon}"\n${leaseSeconds === undefined ? "" : `lease_s = ${leaseSeconds}\n`}`;

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

describe("a database that stops answering", () => {
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await Daemon.start({ config: `${POOLS + storeToml("hv-frozen")}timeout_s = 2\n` });
  });
  afterAll(async () => {
    pg.thaw();
    await daemon.dispose();
  });

  test("changes and reads answer 503 STORE_UNAVAILABLE after the store's timeout, not never; it comes back by itself", async () => {
    expect((await daemon.post("/api/v1/ip/allocate", { vm_id: "before-freeze" })).status).toBe(201);
    pg.freeze();
    try {
      const started = performance.now();
      // A client that gives up after 20 s: without the store's timeout, these would wait for ever.
      const signal = AbortSignal.timeout(20_000);
      const [refused, lookup] = await Promise.all([
        daemon.json("/api/v1/ip/allocate", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ vm_id: "during-freeze" }),
          signal,
        }),
        daemon.json("/api/v1/ip/before-freeze", { signal }),
      ]);
      const waited = performance.now() - started;
      expect([refused.status, refused.body.code]).toEqual([503, "STORE_UNAVAILABLE"]);
      expect(refused.body.error).toContain("did not answer within 2 s");
      expect(refused.body.error).toContain("whether a change was made is not known");
      expect([lookup.status, lookup.body.code]).toEqual([503, "STORE_UNAVAILABLE"]);
      expect(waited).toBeGreaterThanOrEqual(1_900);
      expect(waited).toBeLessThan(15_000);
    } finally {
      pg.thaw();
    }
    // The allocation answered 503 may have been made once the server went on: asked again, it is
    // given (the same address if it was), and the daemon answers as before.
    const answered = await eventually(async () => {
      const again = await daemon.post("/api/v1/ip/allocate", { vm_id: "during-freeze" });
      return again.status === 200 || again.status === 201;
    }, 20_000);
    expect(answered).toBe(true);
    expect((await daemon.json("/api/v1/ip/before-freeze")).status).toBe(200);
  });
});

describe("a daemon on the same machine as the database", () => {
  test("reaches it through its Unix socket, named as libpq does (?host=/dir)", async () => {
    const url = `postgresql://test@/postgres?host=${pg.socketDir}&port=${pg.port}`;
    const daemon = await Daemon.start({ config: POOLS + storeToml("local", url) });
    try {
      const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "over-socket" });
      expect(status).toBe(201);
      const [row] = await sql<{ vm_id: string }[]>`SELECT vm_id FROM allocations WHERE vm_id = 'over-socket'`;
      expect(row?.vm_id).toBe("over-socket");
      expect((await daemon.json("/api/v1/ip/over-socket")).body.ip).toBe(body.ip);
    } finally {
      await daemon.dispose();
    }
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

describe("two daemons given one name", () => {
  test("the second to start under a live daemon's name is refused with exit 2, naming the first; the first goes on", async () => {
    const first = await Daemon.start({ config: POOLS + storeToml("twin", pg.url, 3) });
    try {
      const second = await Daemon.start({ config: POOLS + storeToml("twin", pg.url, 3) }).catch((e: Error) => e);
      expect(second).toBeInstanceOf(Error);
      expect((second as Error).message).toContain("exited with 2");
      expect((second as Error).message).toContain(`another live daemon runs as "twin" (pid ${first.proc.pid} on `);
      expect((await first.post("/api/v1/ip/allocate", { vm_id: "twin-1" })).status).toBe(201);
    } finally {
      await first.dispose();
    }
  });

  test("a daemon whose name another process takes while it runs stops with exit 2, saying which", async () => {
    const daemon = await Daemon.start({ config: POOLS + storeToml("displaced", pg.url, 3) });
    try {
      expect((await daemon.post("/api/v1/ip/allocate", { vm_id: "displaced-1" })).status).toBe(201);
      // What a twin started at the same moment on another host writes when it registers after this one.
      await sql`UPDATE daemons SET instance = ${JSON.stringify({ host: "hv-clone", boot: "b", pid: 4242 })}
                WHERE id = 'displaced'`;
      expect(await daemon.proc.exited).toBe(2);
      expect(daemon.logs).toContain("daemon name taken: stopping");
      expect(daemon.logs).toContain('another daemon has registered as \\"displaced\\" (pid 4242 on hv-clone)');
    } finally {
      await daemon.dispose();
    }
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
    // Killed once the load is well under way (a time alone is too short on a slow machine), at a moment no answer marks.
    expect(await eventually(async () => acknowledged.size > 20, 20_000, 5)).toBe(true);
    await Bun.sleep(Math.floor(Math.random() * 50));
    await daemon.kill9();
    await Promise.all(load);
    expect(acknowledged.size).toBeGreaterThan(20);
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

/** Four pages with 40 free addresses each: 10.30.0.2–41, 10.30.16.0–39, 10.30.32.0–39, 10.30.48.0–39. */
const SMALL_PAGES = poolsToml([
  {
    name: "small-pages",
    cidr: "10.30.0.0/18",
    gateway: "10.30.0.1",
    reserved: [
      "10.30.0.42-10.30.15.255",
      "10.30.16.40-10.30.31.255",
      "10.30.32.40-10.30.47.255",
      "10.30.48.40-10.30.63.254",
    ],
  },
  { name: "wide", cidr: "10.31.0.0/18", gateway: "10.31.0.1" },
  { name: "one-page", cidr: "10.32.0.0/24", gateway: "10.32.0.1" },
]);
const LEASE_S = 2;
const pageOf = (ip: string) => Math.floor((Number(ip.split(".")[2]) % 64) / 16);

async function metric(daemon: Daemon, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await daemon.fetch("/metrics")).text();
  return sampleValue(parseExposition(text), name, labels);
}

async function fsckClean(daemon: Daemon): Promise<void> {
  const out = await runToExit(["fsck", "--config", daemon.configPath]);
  expect([out.code, out.stderr]).toEqual([0, ""]);
}

type Answer = Awaited<ReturnType<Daemon["post"]>>;

/** Allocates `vmIds` through `daemon`, `width` at a time; the answers in order. */
async function allocateAll(daemon: Daemon, pool: string, vmIds: readonly string[], width = 8) {
  const answers: ({ vmId: string } & Answer)[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < vmIds.length) {
        const vmId = vmIds[next++] as string;
        answers.push({ vmId, ...(await daemon.post("/api/v1/ip/allocate", { vm_id: vmId, pool })) });
      }
    }),
  );
  return answers;
}

describe("three daemons on one pool: pages claimed, borrowed, taken back and taken over", () => {
  // The fleet's pools are one list: these daemons serve the ones the daemons above made too.
  const config = (daemon: string) => POOLS + SMALL_PAGES + storeToml(daemon, pg.url, LEASE_S);
  let fleet: Daemon[] = [];
  beforeAll(async () => {
    fleet = await Promise.all(["hv1", "hv2", "hv3"].map((id) => Daemon.start({ config: config(id) })));
  });
  afterAll(async () => {
    await Promise.all(fleet.map((daemon) => daemon.dispose()));
  });

  test("hammering a pool of four 40-address pages, they hand out exactly its 160 addresses, none twice, borrowing pages once theirs are full", async () => {
    const answers = await Promise.all(
      fleet.map((daemon, d) =>
        allocateAll(
          daemon,
          "small-pages",
          Array.from({ length: 70 }, (_, i) => `hammer-${d}-${i}`),
        ),
      ),
    );
    const granted = answers.flat().filter((answer) => answer.status === 201);
    const refused = answers.flat().filter((answer) => answer.status !== 201);
    expect(granted).toHaveLength(160);
    expect(new Set(granted.map((answer) => answer.body.ip)).size).toBe(160);
    expect(new Set(refused.map((answer) => answer.body.code))).toEqual(new Set(["POOL_EXHAUSTED"]));
    const owners = await sql<{ page: number; owner: string | null }[]>`
      SELECT page, owner FROM pool_pages WHERE pool = 'small-pages' ORDER BY page`;
    expect(owners.every((row) => ["hv1", "hv2", "hv3"].includes(row.owner ?? ""))).toBe(true);
    // Whatever the split of the four pages, a daemon holding two (80 addresses) was sent only 70
    // requests, and one holding none took every address from others' pages: at least 10 borrowed.
    const borrowed = answers.flatMap((list, d) =>
      list.filter((answer) => answer.status === 201 && owners[pageOf(answer.body.ip)]?.owner !== `hv${d + 1}`),
    );
    expect(borrowed.length).toBeGreaterThanOrEqual(10);
    let claims = 0;
    let statements = 0;
    for (const daemon of fleet) {
      claims += await metric(daemon, "ippool_fleet_page_claims_total", { from: "free" });
      statements += await metric(daemon, "ippool_fleet_writes_total", { commit: "statement" });
      expect((await daemon.json("/api/v1/ip/stats?pool=small-pages")).body).toMatchObject({ allocated: 160 });
    }
    expect(claims).toBe(4);
    // New allocations on a daemon's own pages went in one statement per batch; borrowed ones did not.
    expect(statements).toBeGreaterThan(0);
    expect(statements).toBeLessThanOrEqual(160 - borrowed.length);
    await fsckClean(fleet[0] as Daemon);
  });

  test("kill -9 of one mid-load: the others go on, no acknowledged allocation is lost, and restarted it takes its own pages back", async () => {
    const acknowledged = new Map<string, string>();
    let killed = false;
    let afterKill = 0;
    let stopping = false;
    const load = fleet.flatMap((daemon, d) =>
      Array.from({ length: 6 }, async (_, worker) => {
        for (let i = 0; !stopping; i++) {
          const vmId = `kill-${d}-${worker}-${i}`;
          try {
            const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: vmId, pool: "wide" });
            if (status !== 201) continue;
            acknowledged.set(vmId, body.ip);
            if (killed) afterKill++;
          } catch {
            return; // hv3 is gone: this request's answer never came
          }
        }
      }),
    );
    await Bun.sleep(400);
    const victim = fleet[2] as Daemon;
    const [held] = await sql<{ page: number; epoch: number }[]>`
      SELECT page, epoch::int AS epoch FROM pool_pages WHERE pool = 'wide' AND owner = 'hv3'`;
    await victim.kill9();
    killed = true;
    await Bun.sleep(400);
    stopping = true;
    await Promise.all(load);
    expect(afterKill).toBeGreaterThan(0);
    const ips = [...acknowledged.values()];
    expect(new Set(ips).size).toBe(ips.length);
    fleet[2] = await Daemon.start({ config: config("hv3"), dir: victim.dir });
    const restarted = fleet[2] as Daemon;
    const again = await restarted.post("/api/v1/ip/allocate", { vm_id: "after-restart", pool: "wide" });
    expect(again.status).toBe(201);
    expect(pageOf(again.body.ip)).toBe(held?.page as number);
    expect(await metric(restarted, "ippool_fleet_page_claims_total", { from: "own" })).toBe(1);
    const [now] = await sql<{ owner: string; epoch: number }[]>`
      SELECT owner, epoch::int AS epoch FROM pool_pages WHERE pool = 'wide' AND page = ${held?.page as number}`;
    expect(now).toEqual({ owner: "hv3", epoch: (held?.epoch as number) + 1 });
    for (const [vmId, ip] of acknowledged) {
      const { status, body } = await restarted.json(`/api/v1/ip/${vmId}?pool=wide`);
      expect([vmId, status, body.ip]).toEqual([vmId, 200, ip]);
    }
    await fsckClean(restarted);
  });

  test("SIGSTOP past the lease, then SIGCONT: the page taken from the paused daemon refuses its write, and its request is answered from another", async () => {
    const [paused, other] = fleet as [Daemon, Daemon];
    const first = await paused.post("/api/v1/ip/allocate", { vm_id: "paused-1", pool: "one-page" });
    expect(first.status).toBe(201);
    paused.proc.kill("SIGSTOP");
    let answer: Promise<Answer> | undefined;
    try {
      await Bun.sleep((LEASE_S + 1.5) * 1000);
      const taken = await other.post("/api/v1/ip/allocate", { vm_id: "other-1", pool: "one-page" });
      expect(taken.status).toBe(201);
      expect(await metric(other, "ippool_fleet_page_claims_total", { from: "stale" })).toBe(1);
      answer = paused.post("/api/v1/ip/allocate", { vm_id: "paused-2", pool: "one-page" });
      await Bun.sleep(200);
    } finally {
      paused.proc.kill("SIGCONT");
    }
    const second = await answer;
    expect(second?.status).toBe(201);
    expect(await metric(paused, "ippool_fleet_page_writes_fenced_total")).toBe(1);
    const [page] = await sql<{ owner: string }[]>`SELECT owner FROM pool_pages WHERE pool = 'one-page'`;
    expect(page?.owner).toBe("hv2");
    const listed = (await other.json("/api/v1/ip/allocations?pool=one-page")).body as { ip: string }[];
    expect(listed).toHaveLength(3);
    expect(new Set(listed.map((allocation) => allocation.ip)).size).toBe(3);
    await fsckClean(other);
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
    expect(result.stderr).toContain(`schema is version 0, this ippool needs ${SCHEMA_VERSION}: run ippool db migrate`);
  });

  test("a database migrated by a newer ippool: exit 2, and nothing in it changes", async () => {
    await sql`UPDATE ippool_schema SET version = 99`;
    try {
      const result = await startOn(pg.url);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`schema is version 99, newer than this ippool's ${SCHEMA_VERSION}`);
    } finally {
      await sql`UPDATE ippool_schema SET version = ${SCHEMA_VERSION}`;
    }
  });

  test("no database where the URL points: exit 3", async () => {
    const result = await startOn("postgres://test@127.0.0.1:1/postgres");
    expect(result.code).toBe(3);
    expect(result.stderr).toContain("cannot use the database");
  });
});
