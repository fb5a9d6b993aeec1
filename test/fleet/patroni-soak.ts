/**
 * Fleet mode through repeated failovers of a Patroni-managed PostgreSQL cluster (`make
 * soak-patroni`, in `make soak`; as root): etcd and two Patroni nodes from Debian, in synchronous
 * mode, started by this script (test/support/patroni.ts). Three daemons share the database,
 * given both nodes in one URL (`target_session_attrs=primary`), under a steady load of
 * allocations and releases. Each round crashes the leader's machine (`kill -9` of Patroni and of
 * every PostgreSQL process of that node), waits for Patroni to promote the synchronous standby,
 * then starts the crashed node again and waits until it is the synchronous standby once more.
 *
 * Checked at the end: every allocation a client was answered 201 for and did not release is
 * there at its address, every acknowledged release is gone, no address is held twice, and fsck
 * (page bits against allocation rows) is clean. Printed per round: the time from the crash to
 * the first write answered after it, and to the node's return as synchronous standby.
 *
 *   bun test/fleet/patroni-soak.ts [--failovers 5]
 */
import { parseArgs } from "node:util";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { startPatroni } from "../support/patroni.ts";

const { values } = parseArgs({ options: { failovers: { type: "string", default: "5" } }, strict: true });
const failovers = Number(values.failovers);
if (!Number.isInteger(failovers) || failovers < 1) throw new Error("--failovers takes a whole number ≥ 1");

const WORKERS_PER_DAEMON = 4;
/** How long writes may pause in one failover before the run counts it a failure (Patroni's ttl is 20 s). */
const RESUME_DEADLINE_MS = 90_000;

const violations: string[] = [];
const violation = (what: string) => {
  violations.push(what);
  console.log(`VIOLATION ${what}`);
};

/** What the clients were told: vm_id → address while held; released vm_ids. */
const held = new Map<string, string>();
const released = new Set<string>();
/** vm_ids whose last request got no clear answer (a 503): either state may be true. */
const uncertain = new Set<string>();
/** During a failover: the first answer to a request sent after the crash (`after`), when it came. */
let resumption = { after: 0, at: 0 };
let answered = 0;
let refused = 0;

const cluster = await startPatroni();
const daemons: Daemon[] = [];
let stopping = false;
try {
  const migrated = await runToExit(["db", "migrate", "--database-url", cluster.url]);
  if (migrated.code !== 0) throw new Error(`ippool db migrate: ${migrated.stderr}`);
  const pool = poolsToml([{ name: "vms", cidr: "10.48.0.0/18" }]);
  for (const name of ["hv1", "hv2", "hv3"]) {
    const store = `\n[store]\nbackend = "postgres"\nurl = "${cluster.url}"\ndaemon = "${name}"\n`;
    daemons.push(await Daemon.start({ config: pool + store }));
  }
  const load = daemons.flatMap((daemon, d) =>
    Array.from({ length: WORKERS_PER_DAEMON }, (_, w) => worker(daemon, `d${d}w${w}`)),
  );

  for (let round = 1; round <= failovers; round++) {
    await cluster.waitHealthy(120_000);
    await Bun.sleep(2000);
    const leader = await cluster.leader();
    await cluster.crash(leader);
    const crashedAt = Date.now();
    resumption = { after: crashedAt, at: 0 };
    const promoted = await cluster.waitForPrimaryOtherThan(leader, RESUME_DEADLINE_MS);
    const promotedMs = Date.now() - crashedAt;
    const resumedMs = await waitForWrites(crashedAt);
    await cluster.start(leader);
    await cluster.waitHealthy(120_000);
    const rejoinedMs = Date.now() - crashedAt;
    console.log(
      `round ${round}: crashed ${leader}; ${promoted} primary after ${promotedMs} ms; writes resumed ${resumedMs === null ? "NEVER" : `${resumedMs} ms`} after the crash; ` +
        `${leader} back as synchronous standby after ${rejoinedMs} ms`,
    );
    if (resumedMs === null) violation(`round ${round}: no write answered within ${RESUME_DEADLINE_MS} ms of the crash`);
  }
  stopping = true;
  await Promise.all(load);
  await check(daemons[0] as Daemon);
} finally {
  stopping = true;
  for (const daemon of daemons) await daemon.dispose();
  await cluster.stop();
}
console.log(
  `patroni soak: ${failovers} failovers, ${answered} answers (${refused} refused with 503), ${held.size} held and ${released.size} released at the end, ${uncertain.size} uncertain, violations ${violations.length}`,
);
process.exit(violations.length === 0 ? 0 : 1);

/** Allocates new vm_ids and releases some of them, recording what each answer said. */
async function worker(daemon: Daemon, tag: string): Promise<void> {
  for (let i = 0; !stopping; i++) {
    const vmId = `${tag}-${i}`;
    await allocate(daemon, vmId);
    // Release one in three of this worker's older allocations, through another request.
    if (i % 3 === 2) await release(daemon, `${tag}-${i - 1}`);
  }
}

async function allocate(daemon: Daemon, vmId: string): Promise<void> {
  const sentAt = Date.now();
  const answer = await daemon.post("/api/v1/ip/allocate", { vm_id: vmId }).catch(failed);
  if (!(answer instanceof Error) && answer.status === 201) {
    held.set(vmId, answer.body.ip);
    uncertain.delete(vmId);
    noteAnswer(sentAt);
  } else settleUnclear(vmId, answer, `allocate (sent ${Date.now() - sentAt} ms before)`);
}

async function release(daemon: Daemon, vmId: string): Promise<void> {
  if (!held.has(vmId) && !uncertain.has(vmId)) return;
  const sentAt = Date.now();
  const answer = await daemon.json(`/api/v1/ip/release/${vmId}`, { method: "DELETE" }).catch(failed);
  const gone = !(answer instanceof Error) && (answer.status === 200 || (answer.status === 404 && uncertain.has(vmId)));
  if (gone) {
    held.delete(vmId);
    uncertain.delete(vmId);
    released.add(vmId);
    noteAnswer(sentAt);
  } else settleUnclear(vmId, answer, `release (sent ${Date.now() - sentAt} ms before)`);
}

function failed(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function noteAnswer(sentAt: number): void {
  answered++;
  if (resumption.at === 0 && sentAt > resumption.after && resumption.after > 0) resumption.at = Date.now();
}

/** A 503 STORE_UNAVAILABLE leaves the change unknown; anything else (no answer at all too) is a violation. */
function settleUnclear(vmId: string, answer: { status: number; body: { code?: string } } | Error, what: string): void {
  if (answer instanceof Error) violation(`${what} ${vmId}: no answer (${answer.message})`);
  else if (!(answer.status === 503 && answer.body.code === "STORE_UNAVAILABLE"))
    violation(`${what} ${vmId} answered ${answer.status} ${JSON.stringify(answer.body)}`);
  refused++;
  uncertain.add(vmId);
  held.delete(vmId);
}

/** Milliseconds from the crash to the first answer to a request sent after it, or null past the deadline. */
async function waitForWrites(crashedAt: number): Promise<number | null> {
  while (Date.now() - crashedAt < RESUME_DEADLINE_MS) {
    if (resumption.at > 0) return resumption.at - crashedAt;
    await Bun.sleep(20);
  }
  return null;
}

async function check(daemon: Daemon): Promise<void> {
  const listed = (await daemon.json("/api/v1/ip/allocations?pool=vms")).body as { vm_id: string; ip: string }[];
  const stored = new Map(listed.map((a) => [a.vm_id, a.ip]));
  if (new Set(listed.map((a) => a.ip)).size !== listed.length) violation("an address is held twice");
  for (const [vmId, ip] of held) {
    if (stored.get(vmId) !== ip) violation(`${vmId}: acknowledged ${ip}, stored ${stored.get(vmId) ?? "nothing"}`);
  }
  for (const vmId of released) if (stored.has(vmId)) violation(`${vmId}: acknowledged release undone`);
  for (const vmId of stored.keys()) {
    if (!held.has(vmId) && !uncertain.has(vmId)) violation(`${vmId}: stored, but never acknowledged held`);
  }
  const fsck = await runToExit(["fsck", "--config", daemon.configPath]);
  if (fsck.code !== 0) violation(`fsck exited ${fsck.code}: ${fsck.stdout}${fsck.stderr}`);
}
