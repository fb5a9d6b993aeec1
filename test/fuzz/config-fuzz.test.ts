/**
 * Config fuzzing: broken TOML files and values never start a daemon with a wrong pool;
 * each gives a one-line error naming the key.
 *
 * In process, CONFIG_FUZZ_CASES documents (default 3000) from CONFIG_FUZZ_SEED (a fixed default,
 * printed) go through `loadConfig`: structured mutations of a valid document (dropped keys, wrong
 * types, random strings, unknown keys, overlapping pools, huge arrays, unicode) and raw broken
 * TOML text (truncations, inserted bytes, stray snippets). Each either loads, and then every pool
 * is exactly what an independent re-derivation from the document says, or throws a ConfigError
 * whose one-line message starts with a key path found in the document (or `file:line:column` for
 * TOML syntax errors). Then CONFIG_FUZZ_BINARY_CASES (default 30) of them go through
 * `dist/ippool fsck --config FILE`: exit 2 with that same single stderr line, or exit 0.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { parse, stringify } from "smol-toml";
import type { Config } from "../../src/config/config.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { loadConfig } from "../../src/config/load.ts";
import { LmdbStore } from "../../src/store/lmdb.ts";
import { BINARY, tempDir } from "../support/daemon.ts";

const SEED = Number(process.env.CONFIG_FUZZ_SEED ?? 20_260_505);
const CASES = Number(process.env.CONFIG_FUZZ_CASES ?? 3000);
const BINARY_CASES = Number(process.env.CONFIG_FUZZ_BINARY_CASES ?? 30);
// Room for the long runs of `make soak` (about 0.2 ms per case in-process, 0.1 s per binary run).
setDefaultTimeout(Math.max(60_000, CASES * 3, BINARY_CASES * 1_000));

const root = tempDir("ippool-config-fuzz-");
afterAll(() => rmSync(root, { recursive: true, force: true }));
const DATA_DIR = join(root, "data");
const CONFIG_PATH = join(root, "fuzz.toml");

type Doc = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// The valid starting document.

const HEX = "0123456789abcdef".repeat(4);
function baseDocument(): Doc {
  return {
    server: { listen: "127.0.0.1:0", socket: "", data_dir: DATA_DIR, log_level: "warn" },
    pools: [
      { name: "vms", cidr: "10.0.0.0/24", gateway: "10.0.0.1", reserved: ["10.0.0.2-10.0.0.9"], strategy: "lowest" },
      { name: "lab", cidr: "10.1.0.0/16" },
      { name: "p2p", cidr: "192.168.7.0/31", default: true },
    ],
    eip_pools: [{ name: "public", cidr: "203.0.113.0/28", reserved: ["203.0.113.1"] }],
    projects: [{ name: "alpha", api_key_sha256: HEX, quota: 5 }],
    hosts: [
      {
        name: "hv1",
        address: "10.0.0.11",
        port: 22,
        user: "ippool",
        private_key: "/etc/ippool/id_ed25519",
        host_key: `SHA256:${"A".repeat(43)}`,
        public_interface: "eth0",
      },
    ],
    reconcile: { interval_s: 60 },
    leaks: { grace_period_s: 900 },
  };
}

const KEYS: Record<string, readonly string[]> = {
  server: ["listen", "socket", "data_dir", "admin_key_sha256", "open_pool_api", "log_format", "log_level"],
  pools: ["name", "cidr", "gateway", "reserved", "strategy", "default"],
  eip_pools: ["name", "cidr", "reserved", "default"],
  projects: ["name", "api_key_sha256", "quota"],
  hosts: [
    "name",
    "address",
    "port",
    "user",
    "private_key",
    "host_key",
    "libvirt_uri",
    "sudo",
    "public_interface",
    "connect_timeout_ms",
    "command_timeout_ms",
  ],
  reconcile: ["interval_s"],
  leaks: ["grace_period_s"],
};
const ARRAY_SECTIONS = new Set(["pools", "eip_pools", "projects", "hosts"]);
const SECTIONS = Object.keys(KEYS);

// ---------------------------------------------------------------------------------------------
// Value generators.

const unicode = fc.constantFrom("é", "ß", "ключ", "名前", "κλειδί", "🔑", "\u200b", "\u0000", "\t", "\r\n", "\\", '"');
const octet = fc.oneof(
  fc.integer({ min: 0, max: 255 }).map(String),
  fc.integer({ min: 256, max: 999 }).map(String),
  fc.integer({ min: 0, max: 99 }).map((n) => `0${n}`),
  fc.constantFrom("", "-1", " 1", "0x1", "1e1"),
);
const quad = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join(".")) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.constantFrom(10, 172, 192), fc.nat(3), fc.nat(3), fc.nat(10)).map((o) => o.join(".")),
  },
  { weight: 1, arbitrary: fc.array(octet, { minLength: 1, maxLength: 6 }).map((o) => o.join(".")) },
);
const prefix = fc.oneof(fc.integer({ min: 0, max: 40 }).map(String), fc.constantFrom("", "08", "-1", "24 ", "3.5"));
/** Mostly aligned networks near the base document's, so overlaps and near-misses are common. */
const cidrText = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.constantFrom(10, 172, 192, 203), fc.nat(3), fc.nat(3), fc.integer({ min: 6, max: 32 }))
      .map(([a, b, c, p]) => {
        const raw = ((a << 24) | (b << 16) | (c << 8)) >>> 0;
        const size = 2 ** (32 - p);
        const base = raw - (raw % size);
        return `${[base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join(".")}/${p}`;
      }),
  },
  { weight: 2, arbitrary: fc.tuple(quad, prefix).map(([q, p]) => `${q}/${p}`) },
  { weight: 1, arbitrary: fc.tuple(quad, fc.constantFrom("", "/", "//24", "\\24")).map(([q, s]) => q + s) },
);
const rangeText = fc.oneof(
  quad,
  fc.tuple(quad, quad).map(([a, b]) => `${a}-${b}`),
  fc.constant("10.0.0.5--10.0.0.6"),
);
const nameText = fc.oneof(
  fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,10}$/),
  fc.constantFrom("vms", "lab", "p2p", "public", "", "-x", "A", "x".repeat(63), "x".repeat(64), "a b", "ä", "a\n"),
);
const wild: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.string({ maxLength: 20 }),
    fc.string({ unit: "grapheme", maxLength: 10 }),
    unicode,
    fc.integer({ min: -1_000_000_000, max: 1_000_000_000 }),
    fc.constantFrom(0, -1, 1, 65_535, 65_536, 86_400, 86_401, 1_000_001, Number.MAX_SAFE_INTEGER),
    fc.double({ noNaN: false }),
    fc.boolean(),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.stringMatching(/^[a-z_]{1,6}$/), tie("value"), { maxKeys: 3 }),
  ),
})).value;

function targeted(key: string): fc.Arbitrary<unknown> {
  switch (key) {
    case "cidr":
      return cidrText;
    case "gateway":
    case "address":
      return quad;
    case "reserved":
      return fc.array(rangeText, { maxLength: 5 });
    case "strategy":
      return fc.constantFrom("next-fit", "lowest", "random", "Lowest", "", "next_fit");
    case "name":
    case "user":
      return nameText;
    case "listen":
      return fc.oneof(
        fc.tuple(quad, fc.integer({ min: -1, max: 70_000 })).map(([h, p]) => `${h}:${p}`),
        fc.constantFrom("", ":8080", "localhost:80", "[::1]:8080", "[::1]", "127.0.0.1", "a b:1", "x:999999"),
      );
    case "socket":
      return fc.constantFrom("", "/run/x.sock", "relative.sock");
    case "api_key_sha256":
    case "admin_key_sha256":
      return fc.oneof(
        fc.constantFrom(HEX, HEX.toUpperCase(), HEX.slice(1), `${HEX}0`, "secret", ""),
        fc.stringMatching(/^[0-9a-fA-G]{63,65}$/),
      );
    case "host_key":
      return fc.oneof(
        fc.constantFrom(`SHA256:${"A".repeat(42)}`, `SHA256:${"A".repeat(44)}`, `sha256:${"A".repeat(43)}`, ""),
        fc.stringMatching(/^SHA256:[A-Za-z0-9+/=]{42,44}$/),
      );
    case "public_interface":
      return fc.oneof(fc.stringMatching(/^[A-Za-z0-9_.-]{0,17}$/), fc.constantFrom("eth0 ", "eth/0", "ethé"));
    case "port":
    case "quota":
    case "interval_s":
    case "grace_period_s":
    case "connect_timeout_ms":
    case "command_timeout_ms":
      return fc.oneof(fc.integer({ min: -10, max: 2_000_000 }), fc.constantFrom(0, 1, 99, 100, 65_535, 65_536, 1.5));
    case "default":
    case "sudo":
    case "open_pool_api":
      return fc.oneof(fc.boolean(), fc.constantFrom("true", 1));
    default:
      return fc.string({ maxLength: 12 });
  }
}

const unknownKey = fc.oneof(
  fc.stringMatching(/^[a-z_][a-z0-9_-]{0,12}$/),
  // Keys holding "/", "~", "." or line breaks are left to the explicit regression tests below.
  fc.constantFrom("ключ", "名前", "🔑", "0", "constructor", "toString", "__proto__", "colour", "Name", "CIDR"),
);

// ---------------------------------------------------------------------------------------------
// Structured mutations.

type Mutation =
  | { kind: "set"; section: string; index: number; key: string; value: unknown }
  | { kind: "drop"; section: string; index: number; key: string }
  | { kind: "unknown"; section: string; index: number; key: string; value: unknown }
  | { kind: "pool"; section: "pools" | "eip_pools"; name: string; cidr: string; extra: Record<string, unknown> }
  | { kind: "section"; section: string; value: unknown }
  | { kind: "huge"; section: "pools" | "eip_pools"; index: number; count: number };

const sectionAndKey = fc.constantFrom(...SECTIONS).chain((section) =>
  fc.record({
    section: fc.constant(section),
    index: fc.oneof({ weight: 5, arbitrary: fc.nat(2) }, { weight: 1, arbitrary: fc.nat(5) }),
    key: fc.constantFrom(...(KEYS[section] as string[])),
  }),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 6,
    arbitrary: sectionAndKey.chain((at) =>
      fc
        .oneof({ weight: 3, arbitrary: targeted(at.key) }, { weight: 1, arbitrary: wild })
        .map((value): Mutation => ({ kind: "set", ...at, value })),
    ),
  },
  { weight: 2, arbitrary: sectionAndKey.map((at): Mutation => ({ kind: "drop", ...at })) },
  {
    weight: 1,
    arbitrary: fc
      .record({
        section: fc.constantFrom("", ...SECTIONS),
        index: fc.nat(2),
        key: unknownKey,
        value: wild,
      })
      .map((m): Mutation => ({ kind: "unknown", ...m })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({
        section: fc.constantFrom("pools" as const, "eip_pools" as const),
        name: nameText,
        cidr: cidrText,
        extra: fc.record(
          { gateway: quad, reserved: fc.array(rangeText, { maxLength: 3 }), default: fc.boolean() },
          { requiredKeys: [] },
        ),
      })
      .map((m): Mutation => ({ kind: "pool", ...m })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({
        section: fc.constantFrom(...SECTIONS),
        value: fc.oneof(wild, fc.constant([]), fc.constant({}), fc.constant(undefined)),
      })
      .map((m): Mutation => ({ kind: "section", ...m })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({
        section: fc.constantFrom("pools" as const, "eip_pools" as const),
        index: fc.nat(2),
        count: fc.oneof(fc.integer({ min: 250, max: 260 }), fc.integer({ min: 4090, max: 4100 })),
      })
      .map((m): Mutation => ({ kind: "huge", ...m })),
  },
);

function isObject(value: unknown): value is Doc {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The object a key of `section` (entry `index` for array sections) lives in, if there is one. */
function holder(doc: Doc, section: string, index: number): Doc | undefined {
  if (section === "") return doc;
  const value = doc[section];
  if (ARRAY_SECTIONS.has(section)) {
    const entry = Array.isArray(value) ? value[index] : undefined;
    return isObject(entry) ? entry : undefined;
  }
  return isObject(value) ? value : undefined;
}

function apply(doc: Doc, m: Mutation): void {
  switch (m.kind) {
    case "set":
    case "unknown": {
      const target = holder(doc, m.section, m.index);
      if (target)
        Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      return;
    }
    case "drop": {
      const target = holder(doc, m.section, m.index);
      if (target) delete target[m.key];
      return;
    }
    case "pool": {
      const list = Array.isArray(doc[m.section]) ? (doc[m.section] as unknown[]) : [];
      const extra = m.section === "eip_pools" ? { ...m.extra, gateway: undefined } : m.extra;
      list.push(
        Object.fromEntries(Object.entries({ name: m.name, cidr: m.cidr, ...extra }).filter(([, v]) => v !== undefined)),
      );
      doc[m.section] = list;
      return;
    }
    case "section":
      if (m.value === undefined) delete doc[m.section];
      else doc[m.section] = m.value;
      return;
    case "huge": {
      if (m.count < 1000) {
        const list = Array.isArray(doc[m.section]) ? (doc[m.section] as unknown[]) : [];
        for (let i = list.length; i < m.count; i++)
          list.push({ name: `n${i}`, cidr: `10.${100 + (i >> 8)}.${i & 255}.0/24` });
        doc[m.section] = list;
        return;
      }
      const target = holder(doc, m.section, m.index);
      if (target) target.reserved = Array.from({ length: m.count }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Raw text damage.

type Damage =
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; bytes: number[] }
  | { kind: "delete"; at: number; length: number }
  | { kind: "snippet"; line: number; text: string };

const SNIPPETS = [
  "[[pools]]",
  "[pools]",
  "[server]",
  "[server",
  "pools = 1",
  'pools.0.cidr = "10.9.0.0/24"',
  'cidr = "10.0.0.0/24"',
  'name = "vms"',
  "name = ",
  'name = "x',
  "name = '''",
  '"""',
  "= 1",
  "a.b.c = 1",
  "x = [1, 2",
  "x = { a = 1",
  "x = 1979-05-27T07:32:00Z",
  "x = 0x1g",
  "x = 99999999999999999999",
  "x = nan",
  "\u0000",
  "\ufeff",
  '[[eip_pools]]\nname = "e2"\ncidr = "10.0.0.0/8"',
  '[[pools]]\nname = "vms"\ncidr = "10.0.0.128/25"',
  "[reconcile]\ninterval_s = 1.0",
];

const damage: fc.Arbitrary<Damage> = fc.oneof(
  fc.nat().map((at): Damage => ({ kind: "truncate", at })),
  fc
    .record({ at: fc.nat(), bytes: fc.array(fc.nat(255), { minLength: 1, maxLength: 4 }) })
    .map((d): Damage => ({ kind: "insert", ...d })),
  fc.record({ at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }).map((d): Damage => ({ kind: "delete", ...d })),
  fc.record({ line: fc.nat(), text: fc.constantFrom(...SNIPPETS) }).map((d): Damage => ({ kind: "snippet", ...d })),
);

function damageText(text: Buffer, d: Damage): Buffer {
  const at = text.length === 0 ? 0 : ("at" in d ? d.at : 0) % (text.length + 1);
  switch (d.kind) {
    case "truncate":
      return text.subarray(0, at);
    case "insert":
      return Buffer.concat([text.subarray(0, at), Buffer.from(d.bytes), text.subarray(at)]);
    case "delete":
      return Buffer.concat([text.subarray(0, at), text.subarray(at + d.length)]);
    case "snippet": {
      const lines = text.toString("latin1").split("\n");
      lines.splice(d.line % (lines.length + 1), 0, d.text);
      return Buffer.from(lines.join("\n"), "latin1");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cases.

interface Case {
  readonly description: string;
  readonly bytes: Buffer;
}

function toToml(doc: Doc): Buffer | null {
  try {
    return Buffer.from(stringify(doc), "utf8");
  } catch {
    return null;
  }
}

const structuredCase: fc.Arbitrary<Case | null> = fc.array(mutation, { minLength: 0, maxLength: 4 }).map((ms) => {
  const doc = baseDocument();
  for (const m of ms) apply(doc, m);
  const bytes = toToml(doc);
  return bytes && { description: `mutations ${describe(ms)}`, bytes };
});

const rawCase: fc.Arbitrary<Case | null> = fc
  .tuple(fc.array(mutation, { maxLength: 1 }), fc.array(damage, { minLength: 1, maxLength: 3 }))
  .map(([ms, ds]) => {
    const doc = baseDocument();
    for (const m of ms) apply(doc, m);
    let bytes = toToml(doc);
    if (!bytes) return null;
    for (const d of ds) bytes = damageText(bytes, d);
    return { description: `mutations ${describe(ms)} then damage ${JSON.stringify(ds)}`, bytes };
  });

const anyCase = fc.oneof({ weight: 3, arbitrary: structuredCase }, { weight: 2, arbitrary: rawCase });

function describe(value: unknown): string {
  const text = JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? String(v) : v));
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

// ---------------------------------------------------------------------------------------------
// The independent oracle for pools.

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const POOL_KEYS = new Set(KEYS.pools);
const EIP_KEYS = new Set(KEYS.eip_pools);

interface Derived {
  name: string;
  cidr: { base: number; prefix: number; size: number };
  gateway: number | null;
  reserved: { first: number; last: number }[];
  strategy: string;
}

function quadValue(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || String(Number(part)) !== part || Number(part) > 255) return null;
    value = value * 256 + Number(part);
  }
  return value;
}

class Invalid extends Error {}

function derivePool(entry: unknown, eip: boolean): Derived {
  if (!isObject(entry)) throw new Invalid("pool is not a table");
  for (const key of Object.keys(entry)) if (!(eip ? EIP_KEYS : POOL_KEYS).has(key)) throw new Invalid(`key ${key}`);
  const { name, cidr, gateway, reserved, strategy } = entry;
  if (typeof name !== "string" || !NAME.test(name)) throw new Invalid("name");
  if (entry.default !== undefined && typeof entry.default !== "boolean") throw new Invalid("default");
  if (typeof cidr !== "string") throw new Invalid("cidr type");
  const slash = cidr.split("/");
  if (slash.length !== 2) throw new Invalid("cidr");
  const [addressText, prefixText] = slash as [string, string];
  const base = quadValue(addressText);
  if (base === null || !/^\d{1,2}$/.test(prefixText) || String(Number(prefixText)) !== prefixText)
    throw new Invalid("cidr");
  const prefix = Number(prefixText);
  if (prefix < 8 || prefix > 32) throw new Invalid("prefix");
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) throw new Invalid("host bits");
  const last = base + size - 1;
  const inside = (ip: number) => ip >= base && ip <= last;
  let gw: number | null;
  if (eip || gateway === undefined) gw = eip || prefix >= 31 ? null : base + 1;
  else {
    if (typeof gateway !== "string") throw new Invalid("gateway type");
    gw = quadValue(gateway);
    if (gw === null || !inside(gw)) throw new Invalid("gateway");
    if (prefix <= 30 && (gw === base || gw === last)) throw new Invalid("gateway edge");
  }
  if (reserved !== undefined && (!Array.isArray(reserved) || reserved.length > 4096)) throw new Invalid("reserved");
  const ranges = ((reserved as unknown[] | undefined) ?? []).map((text) => {
    if (typeof text !== "string") throw new Invalid("reserved type");
    const dash = text.indexOf("-");
    const first = quadValue(dash < 0 ? text : text.slice(0, dash));
    const lastIp = quadValue(dash < 0 ? text : text.slice(dash + 1));
    if (first === null || lastIp === null || lastIp < first || !inside(first) || !inside(lastIp))
      throw new Invalid("reserved range");
    return { first, last: lastIp };
  });
  if (!eip && strategy !== undefined && strategy !== "next-fit" && strategy !== "lowest") throw new Invalid("strategy");
  // Count what is left by marking the unusable offsets (sizes up to /8 are 16M: use ranges).
  const unusable: [number, number][] = ranges.map((r) => [r.first - base, r.last - base]);
  if (prefix <= 30) unusable.push([0, 0], [size - 1, size - 1]);
  if (gw !== null) unusable.push([gw - base, gw - base]);
  unusable.sort((a, b) => a[0] - b[0]);
  let covered = 0;
  let end = -1;
  for (const [s, e] of unusable) {
    if (e <= end) continue;
    covered += e - Math.max(s, end + 1) + 1;
    end = e;
  }
  if (size - covered <= 0) throw new Invalid("no usable address");
  return {
    name,
    cidr: { base, prefix, size },
    gateway: gw,
    reserved: ranges,
    strategy: eip ? "next-fit" : ((strategy as string | undefined) ?? "next-fit"),
  };
}

/** The pools a valid document must load as, or Invalid when its pools are not acceptable. */
function derivePools(doc: Doc): { pools: Derived[]; eipPools: Derived[]; defaultPool: string } {
  const sections = { pools: doc.pools, eip_pools: doc.eip_pools ?? [] };
  if (!Array.isArray(sections.pools) || sections.pools.length < 1 || sections.pools.length > 256)
    throw new Invalid("pools");
  if (!Array.isArray(sections.eip_pools) || sections.eip_pools.length > 256) throw new Invalid("eip_pools");
  const pools = sections.pools.map((p) => derivePool(p, false));
  const eipPools = sections.eip_pools.map((p) => derivePool(p, true));
  for (const list of [pools, eipPools]) {
    if (new Set(list.map((p) => p.name)).size !== list.length) throw new Invalid("duplicate name");
  }
  const all = [...pools, ...eipPools];
  all.forEach((a, i) => {
    for (const b of all.slice(0, i)) {
      if (a.cidr.base < b.cidr.base + b.cidr.size && b.cidr.base < a.cidr.base + a.cidr.size)
        throw new Invalid("overlap");
    }
  });
  for (const list of [sections.pools, sections.eip_pools]) {
    if ((list as Doc[]).filter((p) => p.default === true).length > 1) throw new Invalid("two defaults");
  }
  const marked = (sections.pools as Doc[]).findIndex((p) => p.default === true);
  return { pools, eipPools, defaultPool: (pools[Math.max(marked, 0)] as Derived).name };
}

// ---------------------------------------------------------------------------------------------
// The property.

/** Whether `head` (e.g. `pools[1].cidr`) names something in `doc`; `missingOk` for a required key. */
function pathExists(doc: Doc, head: string, missingOk: boolean): boolean {
  const parts = head.match(/\[\d+\]|[^.[\]]+/g) ?? [];
  if (parts.length === 0 || parts.join("").length !== head.replace(/\./g, "").length) return false;
  let node: unknown = doc;
  for (const [i, part] of parts.entries()) {
    const key = part.startsWith("[") ? part.slice(1, -1) : part;
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, key)) {
      return missingOk && i === parts.length - 1;
    }
    node = (node as Record<string, unknown>)[key];
  }
  return true;
}

function samePools(config: Config, expected: ReturnType<typeof derivePools>): string | null {
  const plain = (list: Config["pools"]) =>
    list.map((p) => ({
      name: p.name,
      cidr: { base: p.cidr.base, prefix: p.cidr.prefix, size: p.cidr.size },
      gateway: p.gateway,
      reserved: p.reserved.map((r) => ({ first: r.first, last: r.last })),
      strategy: p.strategy,
    }));
  const got = { pools: plain(config.pools), eipPools: plain(config.eipPools), defaultPool: config.defaultPool };
  return JSON.stringify(got) === JSON.stringify(expected)
    ? null
    : `loaded pools differ from the document:\n  got ${describe(got)}\n  want ${describe(expected)}`;
}

type Outcome = { ok: true; config: Config } | { ok: false; message: string };

/** Loads `bytes` as a config file; returns the outcome or the reason the property failed. */
function check(bytes: Buffer, path = CONFIG_PATH): { outcome?: Outcome; failure?: string } {
  writeFileSync(path, bytes);
  let doc: Doc | null = null;
  try {
    doc = parse(readFileSync(path, "utf8")) as Doc;
  } catch {
    doc = null;
  }
  let expected: ReturnType<typeof derivePools> | null = null;
  let invalidReason = "";
  if (doc) {
    try {
      expected = derivePools(doc);
    } catch (error) {
      if (!(error instanceof Invalid)) throw error;
      invalidReason = error.message;
    }
  }
  let config: Config;
  try {
    config = loadConfig({ configPath: path });
  } catch (error) {
    if (!(error instanceof ConfigError)) {
      return { failure: `threw ${(error as Error)?.constructor?.name}: ${String((error as Error)?.message ?? error)}` };
    }
    const message = error.message;
    if (error.code !== "CONFIG_INVALID") return { failure: `code ${error.code}` };
    if (/[\r\n]/.test(message)) return { failure: `multi-line message ${JSON.stringify(message)}` };
    if (doc === null) {
      const syntax = new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: \\S`);
      if (!syntax.test(message))
        return { failure: `syntax error without file:line:column: ${JSON.stringify(message)}` };
      return { outcome: { ok: false, message } };
    }
    const head = /^[^\s:]+/.exec(message)?.[0] ?? "";
    const missingOk = /required|at least one/.test(message);
    if (!pathExists(doc, head, missingOk)) {
      return { failure: `message does not start with a key of the document: ${JSON.stringify(message)}` };
    }
    if (expected && /^(eip_)?pools\b/.test(head)) {
      return { failure: `valid pools refused: ${JSON.stringify(message)}` };
    }
    return { outcome: { ok: false, message } };
  }
  if (doc === null) return { failure: "loaded a file the TOML parser refuses" };
  if (!expected) return { failure: `accepted pools the document makes invalid (${invalidReason})` };
  const differs = samePools(config, expected);
  if (differs) return { failure: differs };
  const server = isObject(doc.server) ? doc.server : {};
  if (config.dataDir !== (server.data_dir ?? "/var/lib/ippool"))
    return { failure: `data_dir became ${config.dataDir}` };
  const socket = server.socket === "" ? null : (server.socket ?? "/run/ippool/ippool.sock");
  if (config.socket !== socket) return { failure: `socket became ${config.socket}` };
  for (const p of config.pools) {
    const cidr = `${[p.cidr.base >>> 24, (p.cidr.base >>> 16) & 255, (p.cidr.base >>> 8) & 255, p.cidr.base & 255].join(".")}/${p.cidr.prefix}`;
    if (!(doc.pools as Doc[]).some((section) => section.cidr === cidr))
      return { failure: `pool cidr ${cidr} not in document` };
  }
  return { outcome: { ok: true, config } };
}

interface Failure {
  readonly description: string;
  readonly reason: string;
  readonly text: string;
}

function failureLines(failures: readonly Failure[]): string[] {
  return failures
    .slice(0, 10)
    .map((f) => `${f.reason}\n  case: ${f.description}\n  file: ${JSON.stringify(f.text.slice(0, 2000))}`);
}

const cases = fc.sample(anyCase, { seed: SEED, numRuns: CASES });

test("fuzzed config files load as written or fail with one line naming the key", () => {
  const started = performance.now();
  console.log(`config-fuzz: seed ${SEED} (CONFIG_FUZZ_SEED=${SEED} reproduces), ${CASES} cases`);
  const failures: Failure[] = [];
  let loaded = 0;
  let refused = 0;
  let skipped = 0;
  for (const c of cases) {
    if (!c) {
      skipped++;
      continue;
    }
    const { outcome, failure } = check(c.bytes);
    if (failure) failures.push({ description: c.description, reason: failure, text: c.bytes.toString("utf8") });
    else if (outcome?.ok) loaded++;
    else refused++;
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `config-fuzz: ${CASES} cases: ${loaded} loaded, ${refused} refused, ${skipped} not serialisable, ${failures.length} failures (${seconds.toFixed(1)} s)`,
  );
  expect(failureLines(failures)).toEqual([]);
  expect(loaded).toBeGreaterThan(CASES / 20);
  expect(refused).toBeGreaterThan(CASES / 4);
});

async function fsck(configPath: string, cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([BINARY, "fsck", "--config", configPath], {
    cwd,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

test("through the binary: fsck exits 2 with the same single line, or checks exactly the configured pools", async () => {
  const started = performance.now();
  const failures: Failure[] = [];
  // Alternate refused and loaded documents so both exits are exercised.
  const picked: { c: Case; ok: boolean }[] = [];
  const wantOk = Math.ceil(BINARY_CASES / 3);
  let okCount = 0;
  const binaryDir = join(root, "binary");
  mkdirSync(binaryDir, { recursive: true });
  for (const c of fc.sample(anyCase, { seed: SEED + 1, numRuns: BINARY_CASES * 20 })) {
    if (picked.length >= BINARY_CASES) break;
    if (!c) continue;
    const { outcome } = check(c.bytes, join(binaryDir, "probe.toml"));
    if (!outcome) continue; // the in-process test reports these
    // A loaded config must keep fsck's LMDB inside the temp directory.
    if (outcome.ok && !outcome.config.dataDir.startsWith(root)) continue;
    if (outcome.ok && okCount >= wantOk) continue;
    if (!outcome.ok && picked.length - okCount >= BINARY_CASES - wantOk) continue;
    if (outcome.ok) okCount++;
    picked.push({ c, ok: outcome.ok });
  }
  for (const [i, { c }] of picked.entries()) {
    const path = join(binaryDir, `case-${i}.toml`);
    const { outcome } = check(c.bytes, path);
    // fsck only reads: a valid config's data directory gets an empty store to check, as a first start leaves.
    if (outcome?.ok) await new LmdbStore(outcome.config.dataDir).close();
    const run = await fsck(path, binaryDir);
    const fail = (reason: string) =>
      failures.push({
        description: c.description,
        reason: `${reason} (exit ${run.code}, stderr ${JSON.stringify(run.stderr)})`,
        text: c.bytes.toString("utf8"),
      });
    if (!outcome) fail("in-process check failed");
    else if (outcome.ok) {
      // A fresh data directory has no stored counters, which fsck counts as a problem (exit 1):
      // what matters here is that the config loaded (no exit 2, nothing on stderr) with its pools.
      if (run.code !== 0 && run.code !== 1) fail("valid config: fsck exited neither 0 nor 1");
      if (run.stderr !== "") fail("valid config: fsck wrote to stderr");
      const checked = run.stdout
        .split("\n")
        .flatMap((line) => /^(\S+): 0 allocations, \d+ problems$/.exec(line)?.[1] ?? []);
      const names = outcome.config.pools.map((pool) => pool.name);
      if (JSON.stringify(checked) !== JSON.stringify(names))
        fail(`fsck checked ${describe(checked)}, not the pools ${describe(names)}`);
    } else {
      if (run.code !== 2) fail("invalid config: exit code is not 2");
      if (run.stderr !== `ippool: ${outcome.message}\n`)
        fail(`stderr is not the one line ${JSON.stringify(outcome.message)}`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `config-fuzz binary: ${picked.length} cases (${okCount} valid), ${failures.length} failures (${seconds.toFixed(1)} s)`,
  );
  expect(failureLines(failures)).toEqual([]);
  expect(picked.length).toBe(BINARY_CASES);
});

// Bugs the fuzzer found (fixed): keys with odd characters, and a `server` that is not a table.
function refusal(text: string): string {
  const path = join(root, "regression.toml");
  writeFileSync(path, text);
  try {
    loadConfig({ configPath: path });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}
const ONE_POOL = '[[pools]]\nname = "a"\ncidr = "10.0.0.0/24"\n';

test("an unknown key holding a line break gives a one-line message", () => {
  expect(refusal(`${ONE_POOL}"x\\ny" = 1\n`)).toStartWith('pools[0]["x\\ny"]: unknown key');
});

test("an unknown key holding a slash is named as written", () => {
  expect(refusal(`${ONE_POOL}"a/b" = 1\n`)).toStartWith("pools[0].a/b: unknown key");
});

test("a server key that is not a table is refused", () => {
  for (const value of ["5", "true", "[]", '""', "1979-05-27"]) {
    expect(refusal(`server = ${value}\n${ONE_POOL}`)).toStartWith("server:");
  }
});

test("a server key holding a string is named as server, not server[0]", () => {
  expect(refusal(`server = "ab"\n${ONE_POOL}`)).toStartWith("server:");
});
