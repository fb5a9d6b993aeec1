/** The Elastic IP API without hosts, on each store backend: allocation, idempotency, quota, isolation, auth, release. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configToml, sha256Hex } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type DaemonStore, daemonStore } from "../support/daemon-store.ts";
import { STORE_BACKENDS } from "../support/store-backends.ts";

const ACME = "acme-secret-key";
const GLOBEX = "globex-secret-key";
const CONFIG = configToml({
  pools: [{ name: "vms", cidr: "192.168.100.0/24" }],
  eipPools: { public: "100.64.0.0/24", spare: "100.65.0.0/28" },
  projects: [
    { name: "acme", apiKey: ACME, quota: 3 },
    // The file may spell a hash in upper case.
    { name: "globex", apiKey: GLOBEX, apiKeySha256: sha256Hex(GLOBEX).toUpperCase() },
  ],
});

let daemon: Daemon;

type Via = { key?: string; project?: string; via?: "tcp" | "unix" };
function call(method: string, path: string, { key, project, via = "tcp" }: Via, body?: unknown) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== undefined) headers["x-api-key"] = key;
  if (project !== undefined) headers["x-project"] = project;
  return daemon.json(path, { method, headers, via, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
}
const acme = { key: ACME };
const globex = { key: GLOBEX };

async function releaseAll(who: Via) {
  const { body } = await call("GET", "/elastic-ips", who);
  for (const eip of body) await call("DELETE", `/elastic-ips/${eip.id}`, who);
}

for (const backend of STORE_BACKENDS) {
  describe(`${backend} store`, () => {
    let store: DaemonStore;
    let config: string;
    beforeAll(async () => {
      store = await daemonStore(backend);
      config = CONFIG + store.toml;
      daemon = await Daemon.start({ config });
    });
    afterAll(async () => {
      await daemon.dispose();
      await store.stop();
    });

    describe("allocate", () => {
      test("answers 201 with an eip- id, a public address from the default pool and state allocated", async () => {
        const { status, body } = await call("POST", "/elastic-ips", acme);
        expect(status).toBe(201);
        expect(body.id).toMatch(/^eip-[0-9a-f-]{36}$/);
        expect(body).toMatchObject({ project: "acme", pool: "public", state: "allocated" });
        expect(body.public_ip).toStartWith("100.64.0.");
        expect(Date.parse(body.created_at)).toBeGreaterThan(0);
        await releaseAll(acme);
      });

      test("the same idempotency key returns the same EIP with 200", async () => {
        const first = await call("POST", "/elastic-ips", acme, { idempotency_key: "launch-42" });
        const again = await call("POST", "/elastic-ips", acme, { idempotency_key: "launch-42" });
        expect(first.status).toBe(201);
        expect(again.status).toBe(200);
        expect(again.body).toEqual(first.body);
        expect((await call("GET", "/elastic-ips", acme)).body).toHaveLength(1);
        await releaseAll(acme);
      });

      test("a reused idempotency key with a different pool answers 409 IDEMPOTENCY_MISMATCH", async () => {
        await call("POST", "/elastic-ips", acme, { idempotency_key: "k" });
        const mismatch = await call("POST", "/elastic-ips", acme, { idempotency_key: "k", pool: "spare" });
        expect(mismatch.status).toBe(409);
        expect(mismatch.body.code).toBe("IDEMPOTENCY_MISMATCH");
        await releaseAll(acme);
      });

      test("idempotency keys are per project", async () => {
        const a = await call("POST", "/elastic-ips", acme, { idempotency_key: "shared" });
        const g = await call("POST", "/elastic-ips", globex, { idempotency_key: "shared" });
        expect(g.status).toBe(201);
        expect(g.body.id).not.toBe(a.body.id);
        await releaseAll(acme);
        await releaseAll(globex);
      });

      test("a named pool is used", async () => {
        const { body } = await call("POST", "/elastic-ips", acme, { pool: "spare" });
        expect(body).toMatchObject({ pool: "spare" });
        expect(body.public_ip).toStartWith("100.65.0.");
        await releaseAll(acme);
      });

      test("an unknown pool answers 404 POOL_NOT_FOUND", async () => {
        const { status, body } = await call("POST", "/elastic-ips", acme, { pool: "nope" });
        expect(status).toBe(404);
        expect(body.code).toBe("POOL_NOT_FOUND");
      });

      test("beyond the project's quota answers 409 QUOTA_EXCEEDED and allocates nothing", async () => {
        for (let i = 0; i < 3; i++) expect((await call("POST", "/elastic-ips", acme)).status).toBe(201);
        const over = await call("POST", "/elastic-ips", acme);
        expect(over.status).toBe(409);
        expect(over.body.code).toBe("QUOTA_EXCEEDED");
        expect((await call("GET", "/elastic-ips", acme)).body).toHaveLength(3);
        await releaseAll(acme);
      });

      test("parallel allocations never hand out one address twice and respect the quota", async () => {
        const results = await Promise.all(Array.from({ length: 10 }, () => call("POST", "/elastic-ips", acme)));
        expect(results.filter((r) => r.status === 201)).toHaveLength(3);
        expect(results.filter((r) => r.status === 409)).toHaveLength(7);
        const addresses = results.filter((r) => r.status === 201).map((r) => r.body.public_ip);
        expect(new Set(addresses).size).toBe(3);
        await releaseAll(acme);
      });

      test.each([
        ["a numeric idempotency key", { idempotency_key: 5 }],
        ["an idempotency key with a space", { idempotency_key: "a b" }],
        ["a pool name with capitals", { pool: "Public" }],
      ])("%s answers 422 VALIDATION", async (_what, body) => {
        const response = await call("POST", "/elastic-ips", acme, body);
        expect(response.status).toBe(422);
        expect(response.body.code).toBe("VALIDATION");
      });
    });

    describe("list, get and release", () => {
      test("list filters by state; get returns one; release answers 200 with state released", async () => {
        const { body: eip } = await call("POST", "/elastic-ips", acme);
        expect((await call("GET", "/elastic-ips?state=allocated", acme)).body.map((e: { id: string }) => e.id)).toEqual(
          [eip.id],
        );
        expect((await call("GET", "/elastic-ips?state=associated", acme)).body).toEqual([]);
        expect((await call("GET", `/elastic-ips/${eip.id}`, acme)).body).toEqual(eip);
        const released = await call("DELETE", `/elastic-ips/${eip.id}`, acme);
        expect(released.status).toBe(200);
        expect(released.body).toMatchObject({ id: eip.id, state: "released" });
        expect((await call("GET", `/elastic-ips/${eip.id}`, acme)).status).toBe(404);
        expect((await call("DELETE", `/elastic-ips/${eip.id}`, acme)).status).toBe(404);
      });

      test("a malformed id answers 400", async () => {
        expect((await call("GET", "/elastic-ips/not-an-eip", acme)).status).toBe(400);
      });

      test("a bad state filter answers 400", async () => {
        expect((await call("GET", "/elastic-ips?state=floating", acme)).status).toBe(400);
      });
    });

    describe("project isolation", () => {
      test("another project's EIP is 404 to get and to release, exactly like a missing one, and stays", async () => {
        const { body: eip } = await call("POST", "/elastic-ips", acme);
        const missing = await call("GET", "/elastic-ips/eip-00000000-0000-4000-8000-000000000000", globex);
        const foreign = await call("GET", `/elastic-ips/${eip.id}`, globex);
        expect(foreign.status).toBe(404);
        expect(foreign.body.code).toBe(missing.body.code);
        expect((await call("DELETE", `/elastic-ips/${eip.id}`, globex)).status).toBe(404);
        expect((await call("GET", "/elastic-ips", globex)).body).toEqual([]);
        expect((await call("GET", `/elastic-ips/${eip.id}`, acme)).status).toBe(200);
        await releaseAll(acme);
      });
    });

    describe("authentication", () => {
      test.each([
        ["no key", {}],
        ["a wrong key", { key: "wrong" }],
        ["an empty key", { key: "" }],
        ["a project name instead of a key over TCP", { project: "acme" }],
      ])("%s over TCP answers 401 on every route", async (_what, who) => {
        for (const [method, path] of [
          ["POST", "/elastic-ips"],
          ["GET", "/elastic-ips"],
          ["GET", "/elastic-ips/eip-00000000-0000-4000-8000-000000000000"],
          ["DELETE", "/elastic-ips/eip-00000000-0000-4000-8000-000000000000"],
        ] as const) {
          const response = await call(method, path, who);
          expect(`${method} ${path} ${response.status}`).toBe(`${method} ${path} 401`);
          expect(response.body.code).toBe("UNAUTHORIZED");
        }
      });

      test("over the Unix socket an administrator acts for a project named with X-Project", async () => {
        const created = await call("POST", "/elastic-ips", { project: "globex", via: "unix" });
        expect(created.status).toBe(201);
        expect(created.body.project).toBe("globex");
        expect((await call("GET", `/elastic-ips/${created.body.id}`, globex)).status).toBe(200);
        await releaseAll(globex);
      });

      test("over the Unix socket an unknown project or no project at all answers 401", async () => {
        expect((await call("GET", "/elastic-ips", { project: "initech", via: "unix" })).status).toBe(401);
        expect((await call("GET", "/elastic-ips", { via: "unix" })).status).toBe(401);
      });

      test("over the Unix socket an API key works as over TCP", async () => {
        expect((await call("GET", "/elastic-ips", { key: ACME, via: "unix" })).status).toBe(200);
      });
    });

    describe("persistence", () => {
      test("EIPs survive a restart", async () => {
        const { body: eip } = await call("POST", "/elastic-ips", acme, { idempotency_key: "keep" });
        expect(await daemon.stop()).toBe(0);
        daemon = await Daemon.start({ config, dir: daemon.dir });
        expect((await call("GET", `/elastic-ips/${eip.id}`, acme)).body).toEqual(eip);
        expect((await call("POST", "/elastic-ips", acme, { idempotency_key: "keep" })).body.id).toBe(eip.id);
        await releaseAll(acme);
      });

      test("ippool fsck checks the elastic IPs and their indexes beside the VM pools", async () => {
        await call("POST", "/elastic-ips", acme, { idempotency_key: "fsck" });
        await call("POST", "/elastic-ips", globex, { pool: "spare" });
        expect(await daemon.stop()).toBe(0);
        const out = await runToExit(["fsck", "--config", daemon.configPath]);
        expect(out.code).toBe(0);
        expect(out.stdout.split("\n")).toEqual(
          expect.arrayContaining([
            "vms: 0 allocations, 0 problems",
            "elastic IPs public: 1 allocations, 0 problems",
            "elastic IPs spare: 1 allocations, 0 problems",
            "elastic IP indexes: 2 allocations, 0 problems",
          ]),
        );
        daemon = await Daemon.start({ config, dir: daemon.dir });
        await releaseAll(acme);
        await releaseAll(globex);
      });
    });
  });
}
