/**
 * Who may call what (README: "Who may call the pool API" and "Elastic IPs") as a table, against
 * the compiled daemon over TCP and the Unix socket: every EIP route ×
 * every way of presenting (or not presenting) a project key, and every pool route on a TCP
 * listener that is not loopback × the same for the admin key. The routes are read from the
 * daemon's own /openapi.json, so a route added without a row here fails the coverage test.
 *
 * A refused request must change nothing: the store as the API shows it (allocations, pools, both
 * projects' EIPs) is compared before and after. Another project's key on this project's EIP must
 * answer exactly what a missing EIP answers. Requests are raw bytes, so keys can carry bytes a
 * fetch client would refuse to send.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { exchange } from "../fuzz/http-fuzz.ts";
import { configToml, sha256Hex } from "../support/config-toml.ts";
import { Daemon, tempDir } from "../support/daemon.ts";

const ACME = "acme-7d1f0c2a9b3e4d5f";
const GLOBEX = "globex-41c8e2a0d6b5f397";
const ADMIN = "admin-93b0e5c1f7a2d846";
const MISSING_EIP = "eip-00000000-0000-4000-8000-000000000000";
const HELD_VM = "held-vm";
const HELD_IP = "10.40.0.10";

function config(dir: string, listen: string, adminKey: boolean): string {
  return configToml({
    server: { listen, socket: `${dir}/ippool.sock`, dataDir: dir, ...(adminKey ? { adminKey: ADMIN } : {}) },
    pools: [{ name: "vms", cidr: "10.40.0.0/24" }],
    eipPools: { public: "100.64.0.0/24" },
    projects: [
      { name: "acme", apiKey: ACME },
      { name: "globex", apiKey: GLOBEX },
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// Requests as raw bytes, and the state they may not change
// ---------------------------------------------------------------------------------------------

type Via = "tcp" | "unix";
interface Call {
  readonly method: string;
  readonly path: string;
  readonly body?: unknown;
  /** Header lines as latin1 text: one character is one byte on the wire. */
  readonly headers?: readonly string[];
}
interface Answer {
  readonly status: number | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field with expect()
  readonly body: any;
  readonly text: string;
}

async function send(daemon: Daemon, via: Via, { method, path, body, headers = [] }: Call): Promise<Answer> {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  const framing = body === undefined ? [] : ["Content-Type: application/json", `Content-Length: ${payload.length}`];
  const head = [`${method} ${path} HTTP/1.1`, "Host: localhost", "Connection: close", ...headers, ...framing, "", ""];
  const target = { socket: daemon.socket, port: Number(new URL(daemon.baseUrl).port) };
  const bytes = Buffer.concat([Buffer.from(head.join("\r\n"), "latin1"), payload]);
  const answer = await exchange(target, via, bytes, { head: method === "HEAD", timeoutMs: 10_000 });
  if (answer.status === undefined) throw new Error(`${method} ${path} over ${via}: no answer (${answer.error})`);
  return { status: answer.status, body: parseJson(answer.body), text: answer.body };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const key = (value: string) => [`X-API-Key: ${value}`];
const named = (project: string) => [`X-Project: ${project}`];
const admin = (project: string, path: string) => ({ method: "GET", path, headers: named(project) });

/**
 * A daemon in a known state: one EIP of acme's (the target of every `{id}` route), one of
 * globex's, one VM allocation. Tests that are allowed to change it get it put back afterwards.
 */
class Scene {
  target = "";
  private baseline: unknown;

  private constructor(readonly daemon: Daemon) {}

  static async start(listen: string, adminKey: boolean): Promise<Scene> {
    const dir = tempDir();
    const scene = new Scene(await Daemon.start({ dir, config: config(dir, listen, adminKey) }));
    try {
      await scene.reset();
    } catch (error) {
      await scene.dispose();
      throw error;
    }
    return scene;
  }

  /** The store as the API shows it, read over the socket as the administrator. */
  async state() {
    const [allocations, pools, acme, globex] = await Promise.all(
      [
        { method: "GET", path: "/api/v1/ip/allocations" },
        { method: "GET", path: "/api/v1/pools" },
        admin("acme", "/elastic-ips"),
        admin("globex", "/elastic-ips"),
      ].map((call) => this.asAdmin(call, 200)),
    );
    return { allocations, pools, acme, globex };
  }

  /** A call over the socket that sets up or reads the scene: anything but `status` is a broken scene. */
  private async asAdmin(call: Call, status: number) {
    const answer = await send(this.daemon, "unix", call);
    if (answer.status !== status) {
      throw new Error(`scene: ${call.method} ${call.path} over the socket answered ${answer.status} ${answer.text}`);
    }
    return answer.body;
  }

  /** After a test: put back whatever an allowed request changed. */
  async restore(): Promise<void> {
    if (!Bun.deepEquals(await this.state(), this.baseline)) await this.reset();
  }

  private async reset(): Promise<void> {
    const before = await this.state();
    for (const project of ["acme", "globex"] as const) {
      for (const eip of before[project]) {
        await this.asAdmin({ method: "DELETE", path: `/elastic-ips/${eip.id}`, headers: named(project) }, 200);
      }
    }
    for (const allocation of before.allocations) {
      await this.asAdmin({ method: "DELETE", path: `/api/v1/ip/release/${allocation.vm_id}` }, 200);
    }
    const allocate = (project: string) =>
      this.asAdmin({ method: "POST", path: "/elastic-ips", body: {}, headers: named(project) }, 201);
    this.target = (await allocate("acme")).id;
    await allocate("globex");
    const held = { vm_id: HELD_VM, ip: HELD_IP };
    await this.asAdmin({ method: "POST", path: "/api/v1/ip/allocate", body: held }, 201);
    this.baseline = await this.state();
  }

  dispose(): Promise<void> {
    return this.daemon.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// The rows: one per documented route
// ---------------------------------------------------------------------------------------------

interface Outcome {
  readonly status: number;
  readonly code?: string;
}
interface RouteRow {
  /** What every column sends; `{id}` stands for the target EIP. */
  readonly call: { readonly path: string; readonly body?: unknown };
  /** What a caller who may use the route gets: proof that the request went past the key check. */
  readonly allowed: Outcome;
  /** A request the route refuses as invalid (VALIDATION) to a caller who may use it. */
  readonly invalid?: { readonly path: string; readonly body?: unknown };
}

/** Routes anyone who reaches a listener may call. */
const OPEN_ROUTES = ["GET /api/v1/health", "GET /metrics"];

/** No hosts are configured, so associate stops at finding the instance: after the key and the EIP. */
const EIP_ROUTES: Record<string, RouteRow> = {
  "POST /elastic-ips": {
    call: { path: "/elastic-ips", body: {} },
    allowed: { status: 201 },
    invalid: bad("/elastic-ips", { pool: 5 }),
  },
  "GET /elastic-ips": {
    call: { path: "/elastic-ips" },
    allowed: { status: 200 },
    invalid: bad("/elastic-ips?state=floating"),
  },
  "GET /elastic-ips/{id}": {
    call: { path: "/elastic-ips/{id}" },
    allowed: { status: 200 },
    invalid: bad("/elastic-ips/not-an-eip"),
  },
  "DELETE /elastic-ips/{id}": {
    call: { path: "/elastic-ips/{id}" },
    allowed: { status: 200 },
    invalid: bad("/elastic-ips/eip-x"),
  },
  "POST /elastic-ips/{id}/associate": {
    call: { path: "/elastic-ips/{id}/associate", body: { instance_id: "web-1" } },
    allowed: { status: 404, code: "INSTANCE_NOT_FOUND" },
    invalid: bad("/elastic-ips/{id}/associate", { instance_id: "no spaces" }),
  },
  "POST /elastic-ips/{id}/disassociate": {
    call: { path: "/elastic-ips/{id}/disassociate" },
    allowed: { status: 409, code: "NOT_ASSOCIATED" },
    invalid: bad("/elastic-ips/eip-/disassociate"),
  },
};

const POOL_ROUTES: Record<string, RouteRow> = {
  "POST /api/v1/ip/allocate": {
    call: { path: "/api/v1/ip/allocate", body: { vm_id: "gated-vm" } },
    allowed: { status: 201 },
    invalid: bad("/api/v1/ip/allocate", { vm_id: "" }),
  },
  "GET /api/v1/ip/allocations": {
    call: { path: "/api/v1/ip/allocations" },
    allowed: { status: 200 },
    invalid: bad("/api/v1/ip/allocations?limit=abc"),
  },
  "GET /api/v1/ip/stats": {
    call: { path: "/api/v1/ip/stats" },
    allowed: { status: 200 },
    invalid: bad("/api/v1/ip/stats?pool=BAD!"),
  },
  "DELETE /api/v1/ip/release/{vm_id}": {
    call: { path: `/api/v1/ip/release/${HELD_VM}` },
    allowed: { status: 200 },
    invalid: bad("/api/v1/ip/release/a%01b"),
  },
  "DELETE /api/v1/ip/release-by-ip/{ip}": {
    call: { path: `/api/v1/ip/release-by-ip/${HELD_IP}` },
    allowed: { status: 200 },
    invalid: bad(`/api/v1/ip/release-by-ip/${"9".repeat(65)}`),
  },
  "GET /api/v1/ip/{vm_id}": {
    call: { path: `/api/v1/ip/${HELD_VM}` },
    allowed: { status: 200 },
    invalid: bad("/api/v1/ip/a%01b"),
  },
  "GET /api/v1/pools": { call: { path: "/api/v1/pools" }, allowed: { status: 200 } },
  "GET /api/v1/pools/{name}": {
    call: { path: "/api/v1/pools/vms" },
    allowed: { status: 200 },
    invalid: bad("/api/v1/pools/BAD!"),
  },
  "GET /api/v1/leaks": {
    call: { path: "/api/v1/leaks" },
    allowed: { status: 200 },
    invalid: bad("/api/v1/leaks?pool=BAD!"),
  },
  "POST /api/v1/leaks/release": {
    call: { path: "/api/v1/leaks/release" },
    allowed: { status: 200 },
    invalid: bad("/api/v1/leaks/release?pool=BAD!"),
  },
};

function bad(path: string, body?: unknown) {
  return body === undefined ? { path } : { path, body };
}

// ---------------------------------------------------------------------------------------------
// The columns: ways of presenting a key
// ---------------------------------------------------------------------------------------------

/** refused: 401 UNAUTHORIZED; http: a byte HTTP forbids (the parser may refuse it before the app);
 * allowed: the route's own answer; other: acts as another project. */
type Expect = "refused" | "http" | "allowed" | "other";
interface Column {
  readonly name: string;
  readonly headers: readonly string[];
  readonly expect: Expect;
  readonly via: readonly Via[];
}
const BOTH: readonly Via[] = ["tcp", "unix"];

/** Values that are not `right` but come close to it, or are not keys at all. */
function wrongKeys(right: string): [string, string][] {
  const flip = (at: number) => `${right.slice(0, at)}${right[at] === "x" ? "y" : "x"}${right.slice(at + 1)}`;
  return [
    ["an empty X-API-Key", ""],
    ["a whitespace-only X-API-Key", " \t "],
    ["a 10 KB X-API-Key", "k".repeat(10 * 1024)],
    ["the key with a space inside", `${right.slice(0, 4)} ${right.slice(4)}`],
    ["the key with a tab inside", `${right.slice(0, 4)}\t${right.slice(4)}`],
    ["the key with a byte above 0x7F appended", `${right}\xe9`],
    ["a UTF-8 key", Buffer.from("ключ-🔑").toString("latin1")],
    ["the key with DEL (0x7F) appended", `${right}\x7f`],
    ["the key one character short", right.slice(0, -1)],
    ["the key one character long", `${right}0`],
    ["the key wrong in its first character", flip(0)],
    ["the key wrong in its last character", flip(right.length - 1)],
    ["the key in upper case", right.toUpperCase()],
    ["the key's SHA-256, as the config stores it", sha256Hex(right)],
    ["the key as a Bearer token", `Bearer ${right}`],
  ];
}

/** Every way of asking for the owner's EIPs without being the owner, and the owner's own. */
function keyColumns(right: string, other: { name: string; key: string; expect: Expect }): Column[] {
  return [
    { name: "no key", headers: [], expect: "refused", via: BOTH },
    ...wrongKeys(right).map(([name, value]): Column => ({ name, headers: key(value), expect: "refused", via: BOTH })),
    {
      name: "two X-API-Key headers, the right one first",
      headers: [...key(right), ...key("x")],
      expect: "refused",
      via: BOTH,
    },
    { name: "a NUL byte in the key", headers: key(`${right}\0`), expect: "http", via: BOTH },
    { name: other.name, headers: key(other.key), expect: other.expect, via: BOTH },
    { name: "the right key", headers: key(right), expect: "allowed", via: BOTH },
    {
      name: "the right key between spaces (HTTP trims them)",
      headers: key(`  ${right} `),
      expect: "allowed",
      via: BOTH,
    },
  ];
}

const EIP_COLUMNS: Column[] = [
  ...keyColumns(ACME, { name: "another project's key", key: GLOBEX, expect: "other" }),
  { name: "the admin key", headers: key(ADMIN), expect: "refused", via: BOTH },
  { name: "X-Project naming the owner and no key", headers: named("acme"), expect: "refused", via: ["tcp"] },
  {
    name: "another project's key and X-Project naming the owner",
    headers: [...key(GLOBEX), ...named("acme")],
    expect: "other",
    via: BOTH,
  },
  {
    name: "the owner's key and X-Project naming another project",
    headers: [...key(ACME), ...named("globex")],
    expect: "allowed",
    via: BOTH,
  },
  { name: "X-Project naming the owner (the administrator)", headers: named("acme"), expect: "allowed", via: ["unix"] },
  { name: "X-Project naming another project", headers: named("globex"), expect: "other", via: ["unix"] },
  { name: "X-Project naming no configured project", headers: named("initech"), expect: "refused", via: ["unix"] },
  { name: "an empty X-Project", headers: named(""), expect: "refused", via: ["unix"] },
  {
    name: "a wrong key and X-Project naming the owner",
    headers: [...key("x"), ...named("acme")],
    expect: "refused",
    via: ["unix"],
  },
];

const ADMIN_COLUMNS: Column[] = keyColumns(ADMIN, { name: "a project's key", key: ACME, expect: "refused" }).filter(
  (column) => column.via.includes("tcp"),
);

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

function callOf(route: string, row: Pick<RouteRow, "call">, target: string, headers: readonly string[]): Call {
  const method = route.slice(0, route.indexOf(" "));
  const path = row.call.path.replace("{id}", target);
  return { method, path, headers, ...(row.call.body === undefined ? {} : { body: row.call.body }) };
}

function expectRefused(answer: Answer): void {
  expect(answer.status).toBe(401);
  expect(answer.body?.code).toBe("UNAUTHORIZED");
}

function expectOutcome(answer: Answer, outcome: Outcome): void {
  expect(answer.status).toBe(outcome.status);
  if (outcome.code !== undefined) expect(answer.body?.code).toBe(outcome.code);
}

/** The projects whose EIPs an answer shows (one EIP or a list). */
function projectsIn(body: unknown): unknown[] {
  const items: { project?: unknown }[] = Array.isArray(body) ? body : [body as { project?: unknown }];
  return [...new Set(items.map((item) => item.project))];
}

function outcomeText(outcome: Outcome): string {
  return `${outcome.status}${outcome.code === undefined ? "" : ` ${outcome.code}`}`;
}

function expectation(route: string, row: RouteRow, expect: Expect): string {
  switch (expect) {
    case "refused":
      return "answers 401 UNAUTHORIZED and changes nothing";
    case "http":
      return "is refused and changes nothing";
    case "allowed":
      return `answers ${outcomeText(row.allowed)}`;
    case "other":
      return route.includes("{id}")
        ? "answers 404 like a missing EIP and changes nothing"
        : "acts for that project only and leaves the owner's EIPs alone";
  }
}

/** Runs one cell of the EIP or pool matrix: `owner` is whose EIPs an allowed answer shows. */
async function checkCell(scene: Scene, via: Via, route: string, row: RouteRow, column: Column, owner?: string) {
  const before = await scene.state();
  const answer = await send(scene.daemon, via, callOf(route, row, scene.target, column.headers));
  switch (column.expect) {
    case "refused":
      expectRefused(answer);
      expect(await scene.state()).toEqual(before);
      return;
    case "http":
      // Bun's parser answers 400 to a byte HTTP forbids in a field; were it let through, the app must refuse it.
      expect([400, 401]).toContain(answer.status ?? 0);
      expect(await scene.state()).toEqual(before);
      return;
    case "allowed":
      expectOutcome(answer, row.allowed);
      if (owner !== undefined && answer.status !== undefined && answer.status < 300) {
        expect(projectsIn(answer.body)).toEqual([owner]);
      }
      return;
    case "other":
      return checkOtherProject(scene, via, route, row, column, answer, before);
  }
}

async function checkOtherProject(
  scene: Scene,
  via: Via,
  route: string,
  row: RouteRow,
  column: Column,
  answer: Answer,
  before: Awaited<ReturnType<Scene["state"]>>,
) {
  if (route.includes("{id}")) {
    const missing = await send(scene.daemon, via, callOf(route, row, MISSING_EIP, column.headers));
    expect(answer.status).toBe(404);
    expect(answer.body?.code).toBe("NOT_FOUND");
    expect(answer.text.replaceAll(scene.target, "<id>")).toBe(missing.text.replaceAll(MISSING_EIP, "<id>"));
    expect(await scene.state()).toEqual(before);
  } else {
    expectOutcome(answer, row.allowed);
    expect(projectsIn(answer.body)).toEqual(["globex"]);
    expect((await scene.state()).acme).toEqual(before.acme);
  }
}

/** A request the route would refuse as invalid: with `allowedKey` it is VALIDATION, without any key 401. */
async function checkInvalidWithoutKey(scene: Scene, via: Via, route: string, row: RouteRow, allowedKey: string[]) {
  const invalid = row.invalid;
  if (invalid === undefined) throw new Error(`${route} has no invalid request`);
  const before = await scene.state();
  const allowed = await send(scene.daemon, via, callOf(route, { call: invalid }, scene.target, allowedKey));
  expect(allowed.body?.code).toBe("VALIDATION");
  expectRefused(await send(scene.daemon, via, callOf(route, { call: invalid }, scene.target, [])));
  expect(await scene.state()).toEqual(before);
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

// One daemon on a non-loopback listener with an admin key; its /openapi.json names the routes.
const main = await Scene.start("0.0.0.0:0", true);
afterAll(() => main.dispose());
// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is read field by field
const document: any = (await send(main.daemon, "tcp", { method: "GET", path: "/openapi.json" })).body;
const documented: string[] = Object.entries(document.paths).flatMap(([path, operations]) =>
  Object.keys(operations as object).map((method) => `${method.toUpperCase()} ${path}`),
);
const eipRoutes = documented.filter((route) => route in EIP_ROUTES);
const poolRoutes = documented.filter((route) => route in POOL_ROUTES);
const rowOf = (table: Record<string, RouteRow>, route: string) => table[route] as RouteRow;

describe("the routes of /openapi.json", () => {
  test("every documented route has a row in the auth matrix, and every row a documented route", () => {
    const rows = [...OPEN_ROUTES, ...Object.keys(EIP_ROUTES), ...Object.keys(POOL_ROUTES)];
    expect(documented.filter((route) => !rows.includes(route))).toEqual([]);
    expect(rows.filter((route) => !documented.includes(route))).toEqual([]);
  });

  test("the EIP rows are the /elastic-ips routes and the pool rows the guarded /api/v1 routes", () => {
    expect(eipRoutes.every((route) => / \/elastic-ips(\/|$)/.test(route))).toBe(true);
    expect(poolRoutes.every((route) => / \/api\/v1\//.test(route))).toBe(true);
  });

  test("every guarded route documents its 401, and every EIP route the X-API-Key scheme", () => {
    const operation = (route: string) => {
      const [method, path] = route.split(" ") as [string, string];
      return document.paths[path][method.toLowerCase()];
    };
    const undocumented = [...eipRoutes, ...poolRoutes].filter((route) => !("401" in operation(route).responses));
    expect(undocumented).toEqual([]);
    const withoutScheme = eipRoutes.filter((route) => !JSON.stringify(operation(route).security).includes("apiKey"));
    expect(withoutScheme).toEqual([]);
  });
});

describe("EIP routes: the key decides the project", () => {
  afterEach(() => main.restore());
  for (const route of eipRoutes) {
    const row = rowOf(EIP_ROUTES, route);
    for (const column of EIP_COLUMNS) {
      for (const via of column.via) {
        test(`${route} over ${via} with ${column.name} ${expectation(route, row, column.expect)}`, () =>
          checkCell(main, via, route, row, column, "acme"));
      }
    }
    for (const via of BOTH) {
      test(`${route} over ${via} without a key answers 401 even to a request it would refuse as invalid`, () =>
        checkInvalidWithoutKey(main, via, route, row, key(ACME)));
    }
  }
});

describe("pool routes on a non-loopback TCP listener: the admin key", () => {
  afterEach(() => main.restore());
  for (const route of poolRoutes) {
    const row = rowOf(POOL_ROUTES, route);
    for (const column of ADMIN_COLUMNS) {
      test(`${route} over tcp with ${column.name} ${expectation(route, row, column.expect)}`, () =>
        checkCell(main, "tcp", route, row, column));
    }
    if (row.invalid !== undefined) {
      test(`${route} over tcp without a key answers 401 even to a request it would refuse as invalid`, () =>
        checkInvalidWithoutKey(main, "tcp", route, row, key(ADMIN)));
    }
    test(`${route} over the Unix socket needs no key: answers ${outcomeText(row.allowed)}`, () =>
      checkCell(main, "unix", route, row, { name: "no key", headers: [], expect: "allowed", via: ["unix"] }));
  }
});

describe("HEAD, answered from the GET route", () => {
  afterEach(() => main.restore());
  const gets = [...eipRoutes, ...poolRoutes].filter((route) => route.startsWith("GET "));
  for (const route of gets) {
    const row = rowOf(route in EIP_ROUTES ? EIP_ROUTES : POOL_ROUTES, route);
    const right = route in EIP_ROUTES ? ACME : ADMIN;
    test(`HEAD ${route.slice(4)} over tcp answers 401 without a key and ${row.allowed.status} with the right one`, async () => {
      const head = { call: row.call };
      const refused = await send(main.daemon, "tcp", callOf(`HEAD ${route.slice(4)}`, head, main.target, []));
      expect(refused.status).toBe(401);
      const allowed = await send(main.daemon, "tcp", callOf(`HEAD ${route.slice(4)}`, head, main.target, key(right)));
      expect(allowed.status).toBe(row.allowed.status);
    });
  }
});

describe("open routes", () => {
  test.each([...OPEN_ROUTES, "GET /openapi.json"])(
    "%s answers 200 over non-loopback TCP without a key",
    async (route) => {
      const answer = await send(main.daemon, "tcp", { method: "GET", path: route.slice(4) });
      expect(answer.status).toBe(200);
    },
  );
});

describe("pool routes on a loopback TCP listener are open, as in the original API", () => {
  let loopback: Scene;
  beforeAll(async () => {
    loopback = await Scene.start("127.0.0.1:0", true);
  });
  afterEach(() => loopback.restore());
  afterAll(() => loopback.dispose());
  for (const route of poolRoutes) {
    const row = rowOf(POOL_ROUTES, route);
    test(`${route} over loopback tcp without a key answers ${outcomeText(row.allowed)}`, () =>
      checkCell(loopback, "tcp", route, row, { name: "no key", headers: [], expect: "allowed", via: ["tcp"] }));
  }
  test("EIP routes over loopback tcp still need a project's key", async () => {
    expectRefused(await send(loopback.daemon, "tcp", { method: "GET", path: "/elastic-ips" }));
  });
});

describe("a non-loopback TCP listener without an admin key configured", () => {
  let keyless: Scene;
  beforeAll(async () => {
    keyless = await Scene.start("0.0.0.0:0", false);
  });
  afterEach(() => keyless.restore());
  afterAll(() => keyless.dispose());
  test("warns at start", () => {
    expect(keyless.daemon.logs).toContain("server.admin_key_sha256 is not set");
  });
  for (const route of poolRoutes) {
    const row = rowOf(POOL_ROUTES, route);
    test(`${route} over tcp answers 401 naming server.admin_key_sha256, with or without a key, and changes nothing`, async () => {
      for (const headers of [[], key(ADMIN), key(ACME)]) {
        const before = await keyless.state();
        const answer = await send(keyless.daemon, "tcp", callOf(route, row, keyless.target, headers));
        expectRefused(answer);
        expect(answer.body.error).toContain("server.admin_key_sha256");
        expect(await keyless.state()).toEqual(before);
      }
    });
    test(`${route} over the Unix socket still answers ${outcomeText(row.allowed)}`, () =>
      checkCell(keyless, "unix", route, row, { name: "no key", headers: [], expect: "allowed", via: ["unix"] }));
  }
});
