/**
 * Does checking a wrong API key take measurably different time from checking the right one (keys
 * are "compared in constant time", README "Elastic IPs"; `src/auth/keys.ts`)? Two measurements,
 * printed as a short report; nothing is asserted (timing on a shared machine is noisy, and
 * `make test` has no timing thresholds).
 *
 *   (a) In process, the functions the HTTP layer calls: `keyMatches` (SHA-256 of the presented key,
 *       `timingSafeEqual` against the stored hash), `ProjectDirectory.authenticate` (EIP routes) and
 *       `AdminGate.check` (pool routes). Every variant is timed call by call with
 *       `Bun.nanoseconds()`, `--samples` times each, all variants interleaved in one shuffled order
 *       after a warm-up. A positive control times an early-exit comparison of the plain keys (what
 *       ippool does not do) the same way, to show the method sees a leak of that size.
 *   (b) Over HTTP against dist/ippool on loopback, `--requests` sequential keep-alive requests per
 *       variant, interleaved in one shuffled order: wrong keys against each other (all stop at the
 *       key check), two projects' right keys against each other (same work after the check), and
 *       right against wrong on a path where both stop early (a missing EIP: one store read, then an
 *       error answer either way).
 *
 * Per comparison: medians, means of the samples at or below the pair's 99th percentile (GC pauses
 * and preemption land above it), the difference of those means with its 95% confidence interval
 * and Welch's t-test.
 *
 * `bun bench/key-timing.ts [--samples 200000] [--requests 5000] [--seed 1]`
 */
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { AdminGate } from "../src/auth/admin.ts";
import { keyMatches, sha256 } from "../src/auth/keys.ts";
import { ProjectDirectory } from "../src/auth/projects.ts";
import { configToml } from "../test/support/config-toml.ts";
import { Daemon } from "../test/support/daemon.ts";
import { seededRandom } from "../test/support/seeded-random.ts";

const { values } = parseArgs({
  options: {
    samples: { type: "string", default: "200000" },
    requests: { type: "string", default: "5000" },
    seed: { type: "string", default: "1" },
  },
  strict: true,
});
const SAMPLES = Number(values.samples);
const REQUESTS = Number(values.requests);
const SEED = Number(values.seed);

// Keys as an operator would make them (`openssl rand -hex 16`), all of one length.
const ACME = randomBytes(16).toString("hex");
const GLOBEX = randomBytes(16).toString("hex");
const ADMIN = randomBytes(16).toString("hex");
const MISSING_EIP = "eip-00000000-0000-4000-8000-000000000000";

/** The key with one character changed at `at`, as a flat string like the others (not a rope of slices). */
function flip(key: string, at: number): string {
  return flat(`${key.slice(0, at)}${key[at] === "0" ? "1" : "0"}${key.slice(at + 1)}`);
}

/** A fresh string in one piece: every variant is built the same way, so only its content differs. */
function flat(key: string): string {
  return Buffer.from(key, "latin1").toString("latin1");
}

/** Wrong keys that share the most with `right`, and one of another length. */
function wrongVariants(right: string): Variant[] {
  return [
    { name: "wrong in the first byte", key: flip(right, 0) },
    { name: "wrong in the last byte", key: flip(right, right.length - 1) },
    { name: "one byte longer", key: flat(`${right}0`) },
  ];
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

interface Variant {
  readonly name: string;
  readonly key: string;
}

/** `count` of each of `variants` indexes, in one shuffled order. */
function interleaved(variants: number, count: number, next: () => number): Uint8Array {
  const order = new Uint8Array(variants * count);
  for (let i = 0; i < order.length; i++) order[i] = i % variants;
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function meanAndVariance(samples: Float64Array): { n: number; mean: number; variance: number } {
  let sum = 0;
  for (const x of samples) sum += x;
  const mean = sum / samples.length;
  let squares = 0;
  for (const x of samples) squares += (x - mean) ** 2;
  return { n: samples.length, mean, variance: squares / (samples.length - 1) };
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26); Welch's df here are in the thousands. */
function normalCdf(z: number): number {
  const t = 1 / (1 + (0.3275911 * Math.abs(z)) / Math.SQRT2);
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-(z * z) / 2);
  return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}

interface Comparison {
  readonly medianA: number;
  readonly medianB: number;
  readonly meanA: number;
  readonly meanB: number;
  /** meanB − meanA, with the half-width of its 95% confidence interval. */
  readonly difference: number;
  readonly halfWidth: number;
  readonly t: number;
  readonly p: number;
}

/** B against A: means of the samples at or below the pair's 99th percentile, Welch's t-test. */
function compare(a: Float64Array, b: Float64Array): Comparison {
  const sortedA = a.slice().sort();
  const sortedB = b.slice().sort();
  const both = new Float64Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  const cut = quantile(both.sort(), 0.99);
  const x = meanAndVariance(sortedA.filter((v) => v <= cut));
  const y = meanAndVariance(sortedB.filter((v) => v <= cut));
  const se = Math.sqrt(x.variance / x.n + y.variance / y.n);
  const t = (y.mean - x.mean) / se;
  return {
    medianA: quantile(sortedA, 0.5),
    medianB: quantile(sortedB, 0.5),
    meanA: x.mean,
    meanB: y.mean,
    difference: y.mean - x.mean,
    halfWidth: 1.96 * se,
    t,
    p: 2 * (1 - normalCdf(Math.abs(t))),
  };
}

const fmt = (ns: number, digits = 1) => ns.toFixed(digits).padStart(9);

function row(name: string, c: Comparison, digits = 1): string {
  const ci = `[${(c.difference - c.halfWidth).toFixed(digits)}, ${(c.difference + c.halfWidth).toFixed(digits)}]`;
  const p = c.p < 1e-4 ? "<0.0001" : c.p.toFixed(4);
  return `    ${name.padEnd(44)} ${fmt(c.medianB, digits)} ${fmt(c.meanB, digits)} ${fmt(c.difference, digits)} ${ci.padStart(22)} ${c.t.toFixed(2).padStart(8)} ${p.padStart(8)}`;
}

function header(unit: string, baseline: string, c: Comparison | undefined, digits = 1): string {
  const head = `    ${"variant".padEnd(44)} ${`median`.padStart(9)} ${"mean≤p99".padStart(9)} ${"Δmean".padStart(9)} ${"95% CI of Δ".padStart(22)} ${"Welch t".padStart(8)} ${"p".padStart(8)}   (${unit})`;
  const base =
    c === undefined
      ? ""
      : `\n    ${baseline.padEnd(44)} ${fmt(c.medianA, digits)} ${fmt(c.meanA, digits)}   (baseline)`;
  return `${head}${base}`;
}

/** Prints each variant against the first one. */
function report(title: string, variants: Variant[], samples: Float64Array[], unit = "ns", digits = 1): void {
  console.log(`  ${title}`);
  const [first, ...rest] = samples as [Float64Array, ...Float64Array[]];
  const comparisons = rest.map((s) => compare(first, s));
  console.log(header(unit, (variants[0] as Variant).name, comparisons[0], digits));
  comparisons.forEach((c, i) => {
    console.log(row((variants[i + 1] as Variant).name, c, digits));
  });
}

// ---------------------------------------------------------------------------------------------
// (a) In process
// ---------------------------------------------------------------------------------------------

/**
 * Copies of each key, used in turn. With one string object per variant, the objects themselves
 * (where they sit in memory, what the engine cached about them) made differences of 5–12 ns between
 * variants whose content cannot matter, as large between two copies of one key as between a right
 * and a wrong key; spread over copies they average out.
 */
const COPIES = 64;

/** Times `check(key)` for every variant, call by call, interleaved; samples in ns per variant. */
function timeInProcess(variants: Variant[], check: (key: string) => unknown, next: () => number): Float64Array[] {
  const keys = variants.map((v) => Array.from({ length: COPIES }, () => flat(v.key)));
  const copyOf = (v: number, i: number) => (keys[v] as string[])[i % COPIES] as string;
  for (let i = 0; i < 20_000; i++) check(copyOf(i % keys.length, i));
  const order = interleaved(keys.length, SAMPLES, next);
  const samples = keys.map(() => new Float64Array(SAMPLES));
  const filled = new Uint32Array(keys.length);
  for (const v of order) {
    const key = copyOf(v, filled[v] as number);
    const started = Bun.nanoseconds();
    check(key);
    const ns = Bun.nanoseconds() - started;
    (samples[v] as Float64Array)[(filled[v] as number)++] = ns;
  }
  return samples;
}

/** Swallows the UnauthorizedError of a wrong key, so every variant pays for the same try/catch. */
function refusing(check: (key: string) => unknown): (key: string) => unknown {
  return (key) => {
    try {
      return check(key);
    } catch (error) {
      return error;
    }
  };
}

/** What ippool must not do, as a positive control: plain keys compared until the first difference. */
function earlyExitEquals(stored: string, presented: string): boolean {
  if (stored.length !== presented.length) return false;
  for (let i = 0; i < stored.length; i++) if (stored.charCodeAt(i) !== presented.charCodeAt(i)) return false;
  return true;
}

function inProcess(next: () => number): void {
  const acmeDigest = sha256(ACME);
  const projects = new ProjectDirectory([
    { name: "acme", apiKeySha256: acmeDigest.toString("hex"), quota: 20 },
    { name: "globex", apiKeySha256: sha256(GLOBEX).toString("hex"), quota: 20 },
  ]);
  const gate = new AdminGate(sha256(ADMIN).toString("hex"), true);
  // Wrong in the first byte is the baseline: a comparison that stops at the first difference
  // shows as the last-byte row; the right key's row is the wrong-vs-right question, and the
  // right key once more (other copies) shows how closely two identical variants agree.
  const keyVariants: Variant[] = [
    ...wrongVariants(ACME),
    { name: "another project's key", key: GLOBEX },
    { name: "the right key", key: ACME },
    { name: "the right key again (other copies)", key: ACME },
  ];
  console.log(`(a) in process: ${SAMPLES.toLocaleString("en")} calls per variant, interleaved in a shuffled order`);
  report(
    "keyMatches(acme's stored hash, key): the comparison itself",
    keyVariants,
    timeInProcess(keyVariants, (k) => keyMatches(acmeDigest, k), next),
  );

  const wrongOnly = wrongVariants(ACME);
  const authenticate = refusing((k) => projects.authenticate(k));
  report(
    "ProjectDirectory.authenticate, wrong keys against each other (each throws 401)",
    wrongOnly,
    timeInProcess(wrongOnly, authenticate, next),
  );
  const rightOnly: Variant[] = [
    { name: "acme's key (1st project)", key: ACME },
    { name: "globex's key (2nd project)", key: GLOBEX },
  ];
  report(
    "ProjectDirectory.authenticate, two projects' right keys",
    rightOnly,
    timeInProcess(rightOnly, authenticate, next),
  );
  const rightWrong: Variant[] = [
    { name: "the right key (returns)", key: ACME },
    { name: "wrong in the last byte (throws)", key: flip(ACME, ACME.length - 1) },
  ];
  report(
    "ProjectDirectory.authenticate, right vs wrong: the difference is the thrown error",
    rightWrong,
    timeInProcess(rightWrong, authenticate, next),
  );

  const adminVariants: Variant[] = [...wrongVariants(ADMIN), { name: "a project's key", key: ACME }];
  report(
    "AdminGate.check (pool routes), wrong keys against each other",
    adminVariants,
    timeInProcess(
      adminVariants,
      refusing((k) => gate.check(k)),
      next,
    ),
  );

  const control = wrongVariants(ACME).slice(0, 2);
  report(
    "positive control, NOT ippool's code: early-exit compare of the plain keys",
    control,
    timeInProcess(control, (k) => earlyExitEquals(ACME, k), next),
  );
}

// ---------------------------------------------------------------------------------------------
// (b) Over HTTP
// ---------------------------------------------------------------------------------------------

interface HttpVariant extends Variant {
  readonly path: string;
}

const CONFIG = configToml({
  pools: [{ name: "vms", cidr: "10.40.0.0/24" }],
  eipPools: { public: "100.64.0.0/24" },
  projects: [
    { name: "acme", apiKey: ACME },
    { name: "globex", apiKey: GLOBEX },
  ],
});

/** Sequential keep-alive requests, interleaved; samples in µs per variant (client-side round trip). */
async function timeOverHttp(base: string, variants: HttpVariant[], next: () => number): Promise<Float64Array[]> {
  const ask = async (v: HttpVariant) => {
    const response = await fetch(`${base}${v.path}`, { headers: { "x-api-key": v.key } });
    await response.arrayBuffer();
  };
  for (let i = 0; i < 500; i++) await ask(variants[i % variants.length] as HttpVariant);
  const order = interleaved(variants.length, REQUESTS, next);
  const samples = variants.map(() => new Float64Array(REQUESTS));
  const filled = new Uint32Array(variants.length);
  for (const v of order) {
    const started = Bun.nanoseconds();
    await ask(variants[v] as HttpVariant);
    (samples[v] as Float64Array)[(filled[v] as number)++] = (Bun.nanoseconds() - started) / 1000;
  }
  return samples;
}

async function overHttp(next: () => number): Promise<void> {
  const daemon = await Daemon.start({ config: CONFIG });
  try {
    const list = "/elastic-ips";
    const wrong: HttpVariant[] = [
      ...wrongVariants(ACME).map((v) => ({ ...v, path: list })),
      { name: "wrong in the first byte again (A/A)", key: flip(ACME, 0), path: list },
      { name: "another project's key, wrong in its last byte", key: flip(GLOBEX, GLOBEX.length - 1), path: list },
    ];
    const right: HttpVariant[] = [
      { name: "acme's key (1st project, no EIPs)", key: ACME, path: list },
      { name: "globex's key (2nd project, no EIPs)", key: GLOBEX, path: list },
    ];
    const missing = `/elastic-ips/${MISSING_EIP}`;
    const early: HttpVariant[] = [
      { name: "the right key (404 NOT_FOUND)", key: ACME, path: missing },
      { name: "wrong in the last byte (401)", key: flip(ACME, ACME.length - 1), path: missing },
    ];
    const all = [...wrong, ...right, ...early];
    console.log(
      `\n(b) over HTTP to dist/ippool on 127.0.0.1: ${REQUESTS.toLocaleString("en")} requests per variant, all ${all.length} variants interleaved`,
    );
    const samples = await timeOverHttp(daemon.baseUrl, all, next);
    const part = (from: number, to: number) => samples.slice(from, to);
    report(
      "GET /elastic-ips, wrong keys against each other (all answer 401 at the key check)",
      wrong,
      part(0, wrong.length),
      "µs",
      2,
    );
    report(
      "GET /elastic-ips, two projects' right keys (both answer 200 [])",
      right,
      part(wrong.length, wrong.length + 2),
      "µs",
      2,
    );
    report(
      "GET /elastic-ips/{missing id}, right vs wrong key (both stop early; the right one reads the store once)",
      early,
      part(wrong.length + 2, all.length),
      "µs",
      2,
    );
  } finally {
    await daemon.dispose();
  }
}

// ---------------------------------------------------------------------------------------------

const next = seededRandom(SEED); // so an order can be replayed with --seed
console.log(
  `key-timing: ${cpus().length} cores, load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} at start, Bun ${Bun.version}, seed ${SEED}; keys are 32 hex characters, fresh each run`,
);
console.log(
  "A shared, noisy machine: other work runs alongside; the interleaving spreads it evenly over the variants.\n",
);
inProcess(next);
await overHttp(next);
console.log(`
How to read it: Δmean is each variant's mean minus the first row's; a 95% CI that contains 0 means no
difference was measured, and its width bounds what could hide in the noise. Wrong keys are compared
with each other (first byte vs last byte vs length): a leak would show there. The right key against a
wrong one differs by design in what follows the check (a thrown 401 vs the route's work), so that pair
is reported for the record, not as a leak; the two projects' right keys do the same work after the
check, so they show whether which project matched is visible. SHA-256 hashes the presented key first,
so time depends on its length (the caller's own input), never on how much of it matches.
In process, offsets of a few ns that move from run to run and with the mix of variants (the JIT's doing:
the longer key has measured from -18 to +37 ns, the right key from 0 to +10 ns, while SHA-256 alone and
timingSafeEqual alone show no right/wrong difference) are not a leak; the positive control is the scale
of one: a difference that grows with the number of matching bytes.`);
