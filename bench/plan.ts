/**
 * How long a fleet daemon takes to plan a batch of new allocations (store/postgres/optimistic.ts,
 * `planBatch`): the allocator's steps run over the daemon's cache of its pages, in process, no
 * database. It is the part of a fleet daemon's CPU per allocation that an LMDB daemon does not
 * spend (bench/fleet.ts measures the whole).
 *
 *   bun bench/plan.ts [--steps 100000] [--batch 10] [--full-pages 40] [--held-full 0] [--against DIR]
 *
 * A /11 pool (512 pages), `--full-pages` of them full (`--held-full` of those filled by this
 * daemon, which holds them still where its store does not set full pages aside), the daemon
 * holding two pages with free addresses and claiming the next when one fills, `--batch` new VMs
 * per batch (three daemons under 32 clients batch about
 * 10 each). With `--against`, another checkout of ippool (a `git worktree` of an older commit)
 * is planned in the same process, batch for batch alternately: this machine's speed changes by up
 * to 3x within minutes, and two runs one after the other compare that, not the code. Prints µs per
 * step of each, and their ratio.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "100000" },
    batch: { type: "string", default: "10" },
    "full-pages": { type: "string", default: "40" },
    "held-full": { type: "string", default: "0" },
    against: { type: "string" },
  },
  strict: true,
});
const steps = Number(values.steps);
const batchSize = Number(values.batch);
const fullPages = Number(values["full-pages"]);
const heldFull = Math.min(Number(values["held-full"]), fullPages);
const PAGE_BITS = 4096;
const POOL = "bench";

interface Planner {
  readonly root: string;
  /** Plans one batch and keeps what it committed, as the store does; returns the milliseconds planning took. */
  round(): number;
}

/** The planner of the checkout at `root`, over a cache as a daemon holding two pages has it. */
async function planner(root: string): Promise<Planner> {
  const { allocateInTransaction } = await import(`${root}/src/pool/allocator.ts`);
  const { LayoutCache } = await import(`${root}/src/store/postgres/layout-cache.ts`);
  const { planBatch } = await import(`${root}/src/store/postgres/optimistic.ts`);
  const { pageKey } = await import(`${root}/src/store/postgres/reads.ts`);
  const { poolLayout } = await import(`${root}/test/support/store-fixture.ts`);
  // Whether the tree's store sets full pages aside (pages.ts, `follow`) or keeps holding them.
  const { PageClaims } = await import(`${root}/src/store/postgres/pages.ts`);
  const setsAside = "follow" in PageClaims.prototype;
  const layout = poolLayout(POOL, "10.64.0.0/11");
  const cache = new LayoutCache();
  cache.set("pools", new Map([[POOL, { fingerprint: "f", cidr: "10.64.0.0/11" }]]));
  cache.set(`fullPages\0${POOL}`, new Set(Array.from({ length: fullPages }, (_, index) => index)));
  cache.set(`counts\0${POOL}`, { allocated: fullPages * PAGE_BITS, cursor: fullPages * PAGE_BITS });
  const held = new Map<number, number>();
  const holding = { held: (pool: string) => (pool === POOL ? held : undefined), generation: () => 1 };
  let version = 1;
  const hold = (index: number) => {
    held.set(index, 1);
    cache.set(pageKey(POOL, index), { bits: new Uint32Array(PAGE_BITS / 32), full: false, version: version++ });
  };
  // The pages this daemon filled before, in its cache; still held where the tree's store keeps them.
  for (let index = 0; index < heldFull; index++) {
    if (!setsAside) held.set(index, 1);
    cache.set(pageKey(POOL, index), { bits: new Uint32Array(PAGE_BITS / 32).fill(~0), full: true, version: version++ });
  }
  hold(fullPages);
  hold(fullPages + 1);
  let vm = 0;
  return {
    root,
    round() {
      const batch = Array.from({ length: batchSize }, () => {
        const request = { vmId: `vm-${vm++}`, hostname: "guest" };
        return (view: never) => allocateInTransaction(view, layout, request);
      });
      const started = performance.now();
      const plan = planBatch(batch, cache, holding);
      const took = performance.now() - started;
      if (plan.planned.length !== batchSize) throw new Error(`${root}: planned ${plan.planned.length} of ${batchSize}`);
      // What the store keeps once the statement committed (store.ts, keepCommitted).
      for (const commit of plan.commits) {
        cache.set(`counts\0${POOL}`, plan.answers.get(`counts\0${POOL}`));
        for (const [index, page] of commit.pages) {
          cache.set(pageKey(POOL, index), { bits: page.bits, full: page.full, version: version++ });
          if (!page.full) continue;
          if (setsAside) held.delete(index);
          hold(Math.max(index, ...held.keys()) + 1);
        }
      }
      return took;
    },
  };
}

const roots = [resolve(import.meta.dir, ".."), ...(values.against ? [resolve(values.against)] : [])];
const planners = await Promise.all(roots.map(planner));
const rounds = Math.ceil(steps / batchSize);
// Warm-up: the JIT compiles the planning before it is measured.
for (let i = 0; i < rounds / 4; i++) for (const each of planners) each.round();
const spent = planners.map(() => 0);
for (let i = 0; i < rounds; i++) {
  // Alternate which goes first, so neither always runs just after the other's garbage.
  const order = i % 2 === 0 ? planners.keys() : [...planners.keys()].reverse();
  for (const k of order) spent[k] = (spent[k] as number) + (planners[k] as Planner).round();
}
const perStep = spent.map((ms) => (ms * 1000) / (rounds * batchSize));
planners.forEach((each, k) => {
  console.log(`PLAN root=${each.root} us_per_step=${(perStep[k] as number).toFixed(2)}`);
});
if (perStep.length === 2) console.log(`PLAN ratio=${((perStep[0] as number) / (perStep[1] as number)).toFixed(3)}`);
