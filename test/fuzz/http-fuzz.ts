import { connect } from "node:net";
import fc from "fast-check";
import { configToml } from "../support/config-toml.ts";
import { Daemon } from "../support/daemon.ts";

export const ACME_KEY = "acme-fuzz-key";
export const GLOBEX_KEY = "globex-fuzz-key";

/** A VM pool, two EIP pools and two projects with known API keys; no hosts. */
export const FUZZ_CONFIG = configToml({
  pools: [
    { name: "vms", cidr: "192.168.100.0/24", gateway: "192.168.100.1" },
    { name: "small", cidr: "10.9.0.0/29" },
  ],
  eipPools: { public: "100.64.0.0/24", spare: "100.65.0.0/30" },
  projects: [
    { name: "acme", apiKey: ACME_KEY, quota: 3 },
    { name: "globex", apiKey: GLOBEX_KEY, quota: 4 },
  ],
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP over node:net
// ---------------------------------------------------------------------------------------------

export type Via = "unix" | "tcp";

export interface RawAnswer {
  status?: number;
  headers: Record<string, string>;
  body: string;
  /** "timeout", "closed" (no complete answer) or a socket error. */
  error?: string;
}

export interface Target {
  socket: string;
  port: number;
}

/** Sends bytes, reads one response (or until close / timeout). `end` half-closes after writing. */
export function exchange(
  target: Target,
  via: Via,
  bytes: Buffer,
  { end = false, head = false, timeoutMs = 3000 } = {},
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = via === "unix" ? connect(target.socket) : connect(target.port, "127.0.0.1");
    let data = Buffer.alloc(0);
    let settled = false;
    const finish = (answer: RawAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => finish({ ...parse(data, head, true), error: "timeout" }), timeoutMs);
    socket.on("connect", () => {
      socket.write(bytes, () => {
        if (end) socket.end();
      });
    });
    socket.on("data", (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const answer = parse(data, head, false);
      if (answer) finish(answer);
    });
    socket.on("error", (error) => finish({ ...parse(data, head, true), error: String(error.message) }));
    socket.on("close", () => {
      const answer = parse(data, head, true);
      finish(answer.status === undefined ? { ...answer, error: "closed" } : answer);
    });
  });
}

function parse(data: Buffer, head: boolean, closed: true): RawAnswer;
function parse(data: Buffer, head: boolean, closed: false): RawAnswer | undefined;
function parse(data: Buffer, head: boolean, closed: boolean): RawAnswer | undefined {
  let split = data.indexOf("\r\n\r\n");
  // Interim answers (100 Continue to `Expect: 100-continue`) come before the real one.
  while (split >= 0 && /^HTTP\/1\.[01] 1\d\d/.test(data.subarray(0, 12).toString("latin1"))) {
    data = data.subarray(split + 4);
    split = data.indexOf("\r\n\r\n");
  }
  if (split < 0) return closed ? { headers: {}, body: "" } : undefined;
  const lines = data.subarray(0, split).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const rest = data.subarray(split + 4);
  const answer = (body: Buffer): RawAnswer => ({
    ...(Number.isNaN(status) ? {} : { status }),
    headers,
    body: body.toString("utf8"),
  });
  if (head || status === 204 || status === 304) return answer(Buffer.alloc(0));
  const length = headers["content-length"];
  if (length !== undefined) {
    const n = Number(length);
    if (rest.length >= n) return answer(rest.subarray(0, n));
    return closed ? answer(rest) : undefined;
  }
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
    const decoded = dechunk(rest);
    if (decoded) return answer(decoded);
    return closed ? answer(rest) : undefined;
  }
  return closed ? answer(rest) : undefined;
}

function dechunk(data: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf("\r\n", at);
    if (eol < 0) return undefined;
    const size = Number.parseInt(data.subarray(at, eol).toString("latin1"), 16);
    if (Number.isNaN(size)) return undefined;
    if (size === 0) return Buffer.concat(parts);
    if (data.length < eol + 2 + size + 2) return undefined;
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

// ---------------------------------------------------------------------------------------------
// Generated requests
// ---------------------------------------------------------------------------------------------

/** Placeholders replaced at send time with live values (an existing EIP id). */
const LIVE_EIP = "\u0000LIVE_EIP\u0000";

interface Route {
  readonly method: string;
  readonly path: string;
  readonly body?: "allocate" | "eip" | "associate";
  /** 5xx codes this route documents (never a bug, but must change nothing). */
  readonly allowed5xx?: readonly string[];
}

const ROUTES: readonly Route[] = [
  { method: "GET", path: "/api/v1/health" },
  { method: "POST", path: "/api/v1/ip/allocate", body: "allocate", allowed5xx: ["POOL_EXHAUSTED"] },
  { method: "DELETE", path: "/api/v1/ip/release/{vm}" },
  { method: "DELETE", path: "/api/v1/ip/release-by-ip/{ip}" },
  { method: "GET", path: "/api/v1/ip/{vm}" },
  { method: "GET", path: "/api/v1/ip/allocations" },
  { method: "GET", path: "/api/v1/ip/stats" },
  { method: "GET", path: "/api/v1/pools" },
  { method: "GET", path: "/api/v1/pools/{pool}" },
  // No hosts: leaks answer 200 with a `reason`, never 503 LEAK_CHECK_INCOMPLETE.
  { method: "GET", path: "/api/v1/leaks" },
  { method: "POST", path: "/api/v1/leaks/release" },
  { method: "GET", path: "/openapi.json" },
  { method: "GET", path: "/metrics" },
  { method: "POST", path: "/elastic-ips", body: "eip", allowed5xx: ["POOL_EXHAUSTED"] },
  { method: "GET", path: "/elastic-ips" },
  { method: "GET", path: "/elastic-ips/{eip}" },
  // With no hosts configured, associating a live EIP answers 404 INSTANCE_NOT_FOUND and
  // disassociating one 409 NOT_ASSOCIATED: no 502 HOST_* is allowed here.
  { method: "POST", path: "/elastic-ips/{eip}/associate", body: "associate" },
  { method: "POST", path: "/elastic-ips/{eip}/disassociate" },
  { method: "DELETE", path: "/elastic-ips/{eip}" },
];

const VM_IDS = ["vm-1", "vm-2", "vm-3", "web.example", "x", "v".repeat(128), "~!@#$%^&*()"];
const POOLS = ["vms", "small", "public", "spare", "nope", "VMS", ""];

const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom("", " ", "null", "__proto__", "constructor", "..", "%00", "\u0000", "a/b", "\uffff", "\ud800"),
  fc.string({ minLength: 129, maxLength: 5000 }),
);
const vmId = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...VM_IDS) }, { weight: 1, arbitrary: text });
const vmIp = fc.oneof(
  fc.integer({ min: 0, max: 255 }).map((n) => `192.168.100.${n}`),
  fc.integer({ min: 0, max: 8 }).map((n) => `10.9.0.${n}`),
  fc.ipV4(),
  fc.constantFrom("192.168.100.010", "192.168.100.256", "1.2.3", "::1", "0x7f.1.1.1", "192.168.100.2 "),
  text,
);
const pool = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...POOLS) }, { weight: 1, arbitrary: text });
const instanceId = fc.oneof(
  fc.constantFrom("i-1", "web", "00000000-0000-0000-0000-000000000000", "a".repeat(200), "a".repeat(201)),
  text,
);
/** Any JSON value, or a value of the wrong type for a field. */
const junk = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(null, true, 0, -1, 1e308, [], {}));

/** An object with each field absent, right, or wrong, plus unknown extra fields sometimes. */
function fieldsOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Record<string, unknown>> {
  const entries = Object.entries(fields).map(([name, good]) =>
    fc.oneof({ weight: 2, arbitrary: good }, { weight: 1, arbitrary: junk }).map((value) => [name, value] as const),
  );
  return fc
    .tuple(
      fc.tuple(...entries.map((entry) => fc.option(entry, { freq: 3 }))),
      fc.option(fc.dictionary(fc.string({ maxLength: 12 }), junk, { maxKeys: 3 }), { freq: 4 }),
    )
    .map(([chosen, extra]) => {
      const object: Record<string, unknown> = { ...(extra ?? {}) };
      for (const entry of chosen) if (entry) object[entry[0]] = entry[1];
      return object;
    });
}

const bodyObjects = {
  allocate: fieldsOf({
    vm_id: vmId,
    hostname: fc.oneof(fc.constantFrom(null, "web", "a-b.c", "-x", "a_b", "h".repeat(64)), fc.domain(), text),
    pool: pool,
    ip: vmIp,
    host: fc.oneof(fc.constantFrom("h1", "nope"), text),
  }),
  eip: fieldsOf({
    pool: pool,
    idempotency_key: fc.oneof(fc.constantFrom("k1", "k2", "k".repeat(128), "k".repeat(129)), text),
  }),
  associate: fieldsOf({
    instance_id: instanceId,
    allow_reassociation: fc.oneof(fc.boolean(), junk),
  }),
};

/** Mutations of a JSON text: truncate, delete, insert, duplicate a slice. */
const mutatedJson = (base: fc.Arbitrary<string>) =>
  fc
    .tuple(
      base,
      fc.array(fc.tuple(fc.nat(), fc.nat({ max: 8 }), fc.string({ unit: "binary", maxLength: 4 }), fc.nat(3)), {
        minLength: 1,
        maxLength: 4,
      }),
    )
    .map(([json, edits]) => {
      let out = json;
      for (const [at, length, insert, kind] of edits) {
        const i = out.length === 0 ? 0 : at % (out.length + 1);
        if (kind === 0) out = out.slice(0, i);
        else if (kind === 1) out = out.slice(0, i) + out.slice(i + length);
        else if (kind === 2) out = out.slice(0, i) + insert + out.slice(i);
        else out = out.slice(0, i) + out.slice(i, i + length) + out.slice(i);
      }
      return out;
    });

function bodyFor(kind: Route["body"]): fc.Arbitrary<Buffer | undefined> {
  const object = kind ? bodyObjects[kind] : fc.dictionary(fc.string({ maxLength: 8 }), junk, { maxKeys: 3 });
  const json = object.map((value) => JSON.stringify(value));
  return fc.oneof(
    { weight: 6, arbitrary: json.map((s) => Buffer.from(s)) },
    { weight: 2, arbitrary: mutatedJson(json).map((s) => Buffer.from(s)) },
    { weight: 1, arbitrary: fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "")) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) },
    { weight: 1, arbitrary: fc.constantFrom(undefined, Buffer.alloc(0), Buffer.from("  \n")) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(60_000, 65_536, 65_537, 200_000)
        .map((n) => Buffer.from(JSON.stringify({ vm_id: "big", pad: "p".repeat(Math.max(0, n - 25)) }))),
    },
  );
}

/** Percent-encodes every byte outside the unreserved set (lone surrogates become U+FFFD). */
const pct = (s: string) =>
  [...Buffer.from(s, "utf8")]
    .map((b) =>
      /[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, "0")}`,
    )
    .join("");
const percentGarbage = fc
  .uint8Array({ minLength: 1, maxLength: 12 })
  .map((bytes) => [...bytes].map((b) => `%${b.toString(16).padStart(2, "0")}`).join(""));
/** A path segment: live or plausible values most often, garbage otherwise. Raw (not encoded). */
function segment(valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: valid.map((s) => (s === LIVE_EIP ? s : pct(s))) },
    { weight: 1, arbitrary: percentGarbage },
    { weight: 1, arbitrary: fc.constantFrom(".", "..", "%2e%2e", "%2F", "%2f..%2f", "", "%", "%zz", "a%00b", "//") },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: 200, max: 20_000 }).map((n) => "s".repeat(n)) },
    { weight: 1, arbitrary: text.map((s) => pct(s)) },
  );
}
const eipId = fc.oneof(
  { weight: 5, arbitrary: fc.constant(LIVE_EIP) },
  { weight: 1, arbitrary: fc.uuid().map((u) => `eip-${u}`) },
  { weight: 1, arbitrary: fc.constantFrom("eip-", "eip-00000000-0000-0000-0000-00000000000g", "EIP-x") },
);

const queryPair = fc.oneof(
  fc.constantFrom(
    "pool=vms",
    "pool=small",
    "pool=nope",
    "pool=VMS",
    "pool=",
    "pool=vms&pool=small",
    "pool[]=vms",
    "pool[x]=1",
    "limit=1",
    "limit=0",
    "limit=100000",
    "limit=100001",
    "limit=-1",
    "limit=1e3",
    "after=192.168.100.5",
    "after=999.1.1.1",
    "state=allocated",
    "state=associated",
    "state=released",
    "instance_id=web",
    "__proto__[x]=1",
    "constructor[prototype][x]=1",
    "%zz=%zz",
    "=",
    "&&",
  ),
  fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 30 })).map(([k, v]) => `${pct(k)}=${pct(v)}`),
  percentGarbage.map((g) => `pool=${g}`),
);
const query = fc.oneof(
  { weight: 3, arbitrary: fc.constant("") },
  { weight: 2, arbitrary: fc.array(queryPair, { minLength: 1, maxLength: 4 }).map((pairs) => `?${pairs.join("&")}`) },
  { weight: 1, arbitrary: fc.constantFrom("?", "??", "?#", `?${"q".repeat(10_000)}`) },
);

export interface FuzzRequest {
  via: Via;
  method: string;
  route: Route;
  path: string;
  headers: [string, string][];
  body: Buffer | undefined;
  /** How the body is framed: Content-Length right or lying, chunked, or nothing. */
  framing: "length" | "chunked" | "none" | "short-length" | "long-length" | "bad-length" | "double-length";
  /** Header values with bytes HTTP forbids: the HTTP layer may answer without JSON. */
  rawHeaders: boolean;
}

const auth = fc.oneof(
  fc.constant<[string, string][]>([]),
  fc.constant<[string, string][]>([["X-API-Key", ACME_KEY]]),
  fc.constant<[string, string][]>([["X-API-Key", GLOBEX_KEY]]),
  fc.constant<[string, string][]>([["X-Project", "acme"]]),
  fc.constant<[string, string][]>([["X-Project", "globex"]]),
  fc.constant<[string, string][]>([
    ["X-Project", "acme"],
    ["X-API-Key", GLOBEX_KEY],
  ]),
  fc.constant<[string, string][]>([
    ["X-API-Key", ACME_KEY],
    ["X-API-Key", GLOBEX_KEY],
  ]),
  fc.string({ maxLength: 80 }).map((k): [string, string][] => [["X-API-Key", k]]),
  fc.string({ maxLength: 40 }).map((p): [string, string][] => [["X-Project", p]]),
  fc.constant<[string, string][]>([["X-API-Key", `${ACME_KEY} `]]),
  fc.constant<[string, string][]>([["X-API-Key", ACME_KEY.toUpperCase()]]),
);
const contentType = fc.oneof(
  fc.constantFrom(
    undefined,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/octet-stream",
    "application/json; charset=utf-16",
    "",
    "*/*",
  ),
  fc.string({ maxLength: 30 }),
);
const extraHeaders = fc.array(
  fc.oneof(
    fc.constantFrom<[string, string]>(
      ["Expect", "100-continue"],
      ["Connection", "keep-alive"],
      ["Accept", "application/xml"],
      ["Accept-Encoding", "gzip, br"],
      ["Content-Encoding", "gzip"],
      ["Host", "a"],
      ["Host", ""],
      ["Host", "x".repeat(300)],
      ["X-Forwarded-For", "10.0.0.1"],
      ["Origin", "http://evil"],
      ["X-Next-After", "1"],
    ),
    fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,20}$/), fc.string({ maxLength: 40 })),
  ),
  { maxLength: 3 },
);

const routeArb = fc.constantFrom(...ROUTES);

export const fuzzRequest: fc.Arbitrary<FuzzRequest> = routeArb.chain((route) =>
  fc
    .record({
      via: fc.constantFrom<Via>("unix", "tcp"),
      method: fc.oneof(
        { weight: 8, arbitrary: fc.constant(route.method) },
        {
          weight: 1,
          arbitrary: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "FOO"),
        },
      ),
      vm: segment(vmId),
      ip: segment(vmIp),
      pool: segment(pool),
      eip: segment(eipId),
      query,
      body: route.body || route.method === "POST" ? bodyFor(route.body) : fc.option(bodyFor(undefined), { freq: 8 }),
      framing: fc.oneof(
        { weight: 10, arbitrary: fc.constant<FuzzRequest["framing"]>("length") },
        {
          weight: 1,
          arbitrary: fc.constantFrom<FuzzRequest["framing"]>(
            "chunked",
            "none",
            "short-length",
            "long-length",
            "bad-length",
            "double-length",
          ),
        },
      ),
      auth,
      contentType,
      extra: extraHeaders,
      pathMutation: fc.oneof(
        { weight: 12, arbitrary: fc.constant("") },
        { weight: 1, arbitrary: fc.constantFrom("/", "//", "/.", "/..", "%2F", "?", "#frag", "/../../etc/passwd") },
      ),
    })
    .map((r) => {
      const path =
        route.path.replace("{vm}", r.vm).replace("{ip}", r.ip).replace("{pool}", r.pool).replace("{eip}", r.eip) +
        r.pathMutation +
        r.query;
      const headers: [string, string][] = [...r.auth, ...r.extra];
      if (r.contentType !== undefined) headers.push(["Content-Type", r.contentType]);
      const rawHeaders = headers.some(([, v]) => /[^\t\x20-\x7e]/.test(v)) || /[^\x21-\x7e]/.test(path);
      return {
        via: r.via,
        method: r.method,
        route,
        path,
        headers,
        body: r.body ?? undefined,
        framing: r.body === undefined ? "none" : r.framing,
        rawHeaders,
      };
    }),
);

/** The bytes of a request; LIVE_EIP is replaced by `eip`. */
export function encode(request: FuzzRequest, eip: string): Buffer {
  const path = request.path.replaceAll(LIVE_EIP, eip);
  const lines = [`${request.method} ${path} HTTP/1.1`, "Host: localhost", "Connection: close"];
  for (const [name, value] of request.headers) lines.push(`${name}: ${value}`);
  const body = request.body ?? Buffer.alloc(0);
  let payload = body;
  switch (request.framing) {
    case "length":
      lines.push(`Content-Length: ${body.length}`);
      break;
    case "chunked": {
      lines.push("Transfer-Encoding: chunked");
      const half = Math.floor(body.length / 2);
      const chunks = [body.subarray(0, half), body.subarray(half)].filter((c) => c.length > 0);
      payload = Buffer.concat([
        ...chunks.flatMap((c) => [Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from("\r\n")]),
        Buffer.from("0\r\n\r\n"),
      ]);
      break;
    }
    case "short-length":
      lines.push(`Content-Length: ${Math.max(0, body.length - 3)}`);
      break;
    case "long-length":
      lines.push(`Content-Length: ${body.length + 10}`);
      break;
    case "bad-length":
      lines.push(`Content-Length: ${["-1", "abc", "1e3", " 12", "0x10", "99999999999999999999"][body.length % 6]}`);
      break;
    case "double-length":
      lines.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 1}`);
      break;
    case "none":
      break;
  }
  return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "utf8"), payload]);
}

/** Raw malformed HTTP: bad request lines, huge headers, truncated bodies, invalid chunked bodies. */
export const malformedHttp: fc.Arbitrary<{ name: string; bytes: Buffer; end: boolean }> = fc.oneof(
  fc
    .constantFrom(
      "GET\r\n\r\n",
      "GET /api/v1/health\r\n\r\n",
      "GET /api/v1/health HTTP/9.9\r\nHost: x\r\n\r\n",
      "GET /api/v1/health HTTP/1.1\nHost: x\n\n",
      "GET  /api/v1/health  HTTP/1.1\r\n\r\n",
      "get /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
      "CONNECT localhost:80 HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET http://evil/api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
      "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
      "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n",
      "GET /api/v1/h\u0000ealth HTTP/1.1\r\nHost: x\r\n\r\n",
      'POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"vm_id":"trunc"}',
      'POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\nTransfer-Encoding: chunked\r\n\r\n{"vm_id":"smug"}',
      "POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
      "POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
      'POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"vm_id":"c"}\r\n0\r\n\r\n',
      'POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"vm_id":"chun',
      "POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{}\r\n0\r\n\r\n",
      "POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n{}",
      "POST /elastic-ips HTTP/1.1\r\nHost: x\r\nX-Project: acme\r\nContent-Length: -5\r\n\r\n{}",
      "POST /elastic-ips HTTP/1.1\r\nHost: x\r\nX-Project: acme\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
      "\r\n\r\n\r\n",
      "\u0016\u0003\u0001\u0000\u00a5\u0001\u0000\u0000\u00a1\u0003\u0003",
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )
    .map((s) => ({ name: JSON.stringify(s.slice(0, 60)), bytes: Buffer.from(s, "latin1"), end: true })),
  fc.tuple(fc.integer({ min: 8_000, max: 300_000 }), fc.constantFrom("name", "value", "count")).map(([size, kind]) => {
    const head =
      kind === "name"
        ? `X-${"n".repeat(size)}: v\r\n`
        : kind === "value"
          ? `X-Big: ${"v".repeat(size)}\r\n`
          : Array.from({ length: Math.min(2000, size / 40) }, (_, i) => `X-H${i}: ${i}\r\n`).join("");
    return {
      name: `huge headers (${kind}, ${size})`,
      bytes: Buffer.from(`GET /api/v1/health HTTP/1.1\r\nHost: x\r\n${head}\r\n`),
      end: true,
    };
  }),
  fc.string({ unit: "binary", maxLength: 200 }).map((s) => ({
    name: `random request line ${JSON.stringify(s.slice(0, 40))}`,
    bytes: Buffer.from(`${s}\r\nHost: x\r\n\r\n`),
    end: true,
  })),
  fc
    .uint8Array({ maxLength: 300 })
    .map((b) => ({ name: `random bytes (${b.length})`, bytes: Buffer.from(b), end: true })),
  fc.tuple(fc.nat(), fc.boolean()).map(([cut, end]) => {
    const full = Buffer.from(
      'POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{"vm_id":"cut-off"}',
    );
    const at = cut % full.length;
    return { name: `request truncated at ${at}${end ? "" : " (left open)"}`, bytes: full.subarray(0, at), end };
  }),
);

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

export interface Failure {
  seed: number;
  index: number;
  reason: string;
  request: string;
  answer: string;
}

export interface FuzzReport {
  seed: number;
  requests: number;
  failures: Failure[];
  seconds: number;
  /** "METHOD route -> status CODE" counts, for the report. */
  outcomes: Map<string, number>;
}

export interface FuzzOptions {
  requests: number;
  seed: number;
  /** Requests between liveness checks. */
  batch?: number;
  log?: (line: string) => void;
}

export function optionsFromEnv(defaults: { requests: number }): { requests: number; seed: number } {
  const requests = Number(process.env.FUZZ_REQUESTS ?? defaults.requests);
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
  return { requests, seed };
}

function targetOf(daemon: Daemon): Target {
  return { socket: daemon.socket, port: Number(new URL(daemon.baseUrl).port) };
}

async function getJson(target: Target, path: string, headers: string[] = []): Promise<string> {
  const bytes = Buffer.from(
    [`GET ${path} HTTP/1.1`, "Host: localhost", "Connection: close", ...headers, "", ""].join("\r\n"),
  );
  const answer = await exchange(target, "unix", bytes, { timeoutMs: 10_000 });
  if (answer.status !== 200) throw new Error(`snapshot ${path}: ${answer.status} ${answer.error ?? answer.body}`);
  return answer.body;
}

/** The store as the API shows it: allocations, pools (with stats), each project's EIPs. */
export async function snapshot(target: Target): Promise<string> {
  const [allocations, pools, acme, globex] = await Promise.all([
    getJson(target, "/api/v1/ip/allocations?limit=100000"),
    getJson(target, "/api/v1/pools"),
    getJson(target, "/elastic-ips", ["X-Project: acme"]),
    getJson(target, "/elastic-ips", ["X-Project: globex"]),
  ]);
  return `${allocations}\n${pools}\n${acme}\n${globex}`;
}

async function liveEipId(target: Target): Promise<string | undefined> {
  const list = JSON.parse(await getJson(target, "/elastic-ips", ["X-Project: acme"])) as { id: string }[];
  return list[Math.floor(Math.random() * list.length)]?.id;
}

async function healthy(target: Target): Promise<string | undefined> {
  for (const via of ["unix", "tcp"] as const) {
    const answer = await exchange(
      target,
      via,
      Buffer.from("GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
      { timeoutMs: 10_000 },
    );
    if (answer.status !== 200 || !answer.body.includes("healthy"))
      return `health over ${via}: ${answer.status} ${answer.error ?? answer.body.slice(0, 200)}`;
  }
  return undefined;
}

function show(bytes: Buffer, max = 600): string {
  const s = JSON.stringify(bytes.toString("latin1"));
  return s.length > max ? `${s.slice(0, max)}… (${bytes.length} bytes)` : s;
}

/** Where two snapshots first differ (which part, and 200 characters around it). */
function difference(before: string, after: string): string {
  const parts = ["allocations", "pools", "acme EIPs", "globex EIPs"];
  const a = before.split("\n");
  const b = after.split("\n");
  const at = a.findIndex((part, i) => part !== b[i]);
  const x = a[at] ?? "";
  const y = b[at] ?? "";
  let i = 0;
  while (i < x.length && x[i] === y[i]) i++;
  return `${parts[at]} changed at ${i}:\n  before: …${x.slice(Math.max(0, i - 200), i + 200)}\n  after:  …${y.slice(Math.max(0, i - 200), i + 200)}`;
}

function errorBodyProblem(answer: RawAnswer): string | undefined {
  try {
    const body = JSON.parse(answer.body) as { error?: unknown; code?: unknown };
    if (typeof body?.error !== "string" || typeof body?.code !== "string") return "4xx JSON without string error/code";
    if (!/json/.test(answer.headers["content-type"] ?? "")) return "4xx without a JSON content-type";
    return undefined;
  } catch {
    return "4xx body is not JSON";
  }
}

const STANDARD_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"];

/**
 * Bun's parser answers 505 (empty body) to a request line that is not `METHOD target HTTP/1.x`
 * ended by CRLF (garbage bytes, HTTP/9.9, bare LF line ends): the HTTP layer, not the app.
 */
function versionRejected(status: number, bytes: Buffer): boolean {
  const end = bytes.indexOf("\n");
  const line = bytes.subarray(0, end < 0 ? bytes.length : end).toString("latin1");
  return status === 505 && !/^[A-Za-z]+ [\x21-\x7e]+ HTTP\/1\.[01]\r$/.test(line);
}

/** Runs the fuzzer against a started daemon (configured with FUZZ_CONFIG). */
export async function fuzzDaemon(daemon: Daemon, options: FuzzOptions): Promise<FuzzReport> {
  const { requests, seed, batch = 100, log = () => {} } = options;
  const target = targetOf(daemon);
  const failures: Failure[] = [];
  const outcomes = new Map<string, number>();
  const started = performance.now();
  const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  const fail = (failure: Failure) => {
    failures.push(failure);
    log(
      `FAILURE seed=${failure.seed} #${failure.index}: ${failure.reason}\n  sent: ${failure.request}\n  got: ${failure.answer}`,
    );
  };

  let before = await snapshot(target);
  let sent = 0;
  let chunk = 0;
  while (sent < requests) {
    const size = Math.min(batch, requests - sent);
    // One sample per batch, from a seed derived from the run's seed: reproducible batch by batch.
    const chunkSeed = (seed + chunk * 7919) | 0;
    const malformedEvery = 10;
    const structured = fc.sample(fuzzRequest, { seed: chunkSeed, numRuns: size });
    const malformed = fc.sample(malformedHttp, { seed: chunkSeed ^ 0x5bd1e995, numRuns: size });
    for (let i = 0; i < size; i++) {
      const index = sent + i;
      let bytes: Buffer;
      let answer: RawAnswer;
      let key: string;
      let allowed5xx: readonly string[] = [];
      let mustBeJson = false;
      let malformedRequest = false;
      if (i % malformedEvery === malformedEvery - 1) {
        const raw = malformed[i] as { name: string; bytes: Buffer; end: boolean };
        bytes = raw.bytes;
        malformedRequest = true;
        const via: Via = Math.floor(index / malformedEvery) % 2 === 0 ? "unix" : "tcp";
        // A request left open is expected to wait for the rest: a short look is enough.
        answer = await exchange(target, via, bytes, { end: raw.end, timeoutMs: raw.end ? 2000 : 250 });
        key = `RAW ${via}`;
      } else {
        const request = structured[i] as FuzzRequest;
        const eip = (request.path.includes(LIVE_EIP) && (await liveEipId(target))) || "eip-none";
        bytes = encode(request, eip);
        // A lie only if the declared length really differs (an empty body "shortened" is not).
        // A short length frames a complete request followed by junk: it is answered like any
        // other (half-closing there makes Bun drop the answer while the app still acts on it).
        const lying = ["long-length", "bad-length", "double-length"].includes(request.framing);
        // Bun's HTTP parser, not the app, answers these: unknown methods (connection closed),
        // forbidden bytes in the request line or a header, heads over its limit (431, no body).
        const head = bytes.indexOf("\r\n\r\n");
        malformedRequest =
          lying ||
          request.framing === "short-length" ||
          request.rawHeaders ||
          !STANDARD_METHODS.includes(request.method) ||
          head > 8192;
        answer = await exchange(target, request.via, bytes, {
          end: lying,
          head: request.method === "HEAD",
          timeoutMs: lying ? 2000 : 10_000,
        });
        key = `${request.method} ${request.route.path} ${request.via}`;
        allowed5xx = request.route.allowed5xx ?? [];
        mustBeJson = !malformedRequest && request.method !== "HEAD";
        if (answer.status === undefined && !malformedRequest) {
          fail({
            seed,
            index,
            reason: `no answer to a well-formed request (${answer.error})`,
            request: show(bytes),
            answer: "",
          });
        }
      }
      const status = answer.status;
      let code = "";
      if (status !== undefined && status >= 400) {
        try {
          code = String((JSON.parse(answer.body) as { code?: unknown }).code ?? "");
        } catch {}
      }
      count(`${key} -> ${status ?? answer.error} ${code}`.trim());
      const shown = `${status ?? answer.error} ${answer.body.slice(0, 300)}`;
      if (status !== undefined && status >= 500 && !allowed5xx.includes(code) && !versionRejected(status, bytes)) {
        fail({ seed, index, reason: `${status} answer`, request: show(bytes), answer: shown });
      }
      if (status !== undefined && status >= 400 && status < 500 && mustBeJson) {
        const problem = errorBodyProblem(answer);
        if (problem) fail({ seed, index, reason: problem, request: show(bytes), answer: shown });
      }
      const accepted = status !== undefined && status >= 200 && status < 300;
      const after = await snapshot(target);
      if (!accepted && after !== before) {
        fail({
          seed,
          index,
          reason: `rejected request (${status ?? answer.error}) changed the store`,
          request: show(bytes),
          answer: `${shown}\n  ${difference(before, after)}`,
        });
      }
      before = after;
    }
    sent += size;
    chunk++;
    const problem =
      daemon.proc.exitCode !== null ? `daemon exited with ${daemon.proc.exitCode}` : await healthy(target);
    if (problem) {
      fail({ seed, index: sent, reason: `daemon not alive after batch: ${problem}`, request: "", answer: "" });
      break;
    }
    if (chunk % 50 === 0)
      log(`  ${sent} requests, ${failures.length} failures, ${Math.round(performance.now() - started) / 1000}s`);
  }
  return { seed, requests: sent, failures, seconds: (performance.now() - started) / 1000, outcomes };
}

/** Starts a daemon on FUZZ_CONFIG, fuzzes it, and disposes of it. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const daemon = await Daemon.start({ config: FUZZ_CONFIG });
  try {
    const report = await fuzzDaemon(daemon, options);
    if (/unhandled error/.test(daemon.logs)) {
      const line = daemon.logs.split("\n").find((l) => l.includes("unhandled error")) ?? "";
      report.failures.push({
        seed: options.seed,
        index: -1,
        reason: "daemon logged an unhandled error",
        request: "",
        answer: line.slice(0, 2000),
      });
    }
    return report;
  } finally {
    await daemon.dispose();
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const flag = (name: string) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
  };
  const env = optionsFromEnv({ requests: 2000 });
  const requests = Number(flag("--requests") ?? env.requests);
  const seed = Number(flag("--seed") ?? env.seed);
  console.log(`http-fuzz: seed ${seed} (FUZZ_SEED=${seed} reproduces), ${requests} requests`);
  const report = await runFuzz({ requests, seed, log: (line) => console.log(line) });
  if (args.includes("--outcomes")) {
    for (const [key, n] of [...report.outcomes].sort()) console.log(`  ${n}\t${key}`);
  }
  for (const f of report.failures)
    console.log(`failure seed=${f.seed} #${f.index}: ${f.reason}\n  sent: ${f.request}\n  got: ${f.answer}`);
  console.log(
    `requests sent: ${report.requests}, failures: ${report.failures.length} (seed ${seed}, ${report.seconds.toFixed(1)} s)`,
  );
  process.exit(report.failures.length === 0 ? 0 : 1);
}
