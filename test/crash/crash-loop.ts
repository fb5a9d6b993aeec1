import { rmSync } from "node:fs";
import { join } from "node:path";
import { type ConfigSpec, configToml } from "../support/config-toml.ts";
import { Daemon, runToExit, tempDir } from "../support/daemon.ts";
import { daemonStore } from "../support/daemon-store.ts";
import { seededRandom } from "../support/seeded-random.ts";
import { Testbed } from "../support/testbed.ts";
import {
  type AssociationCounts,
  associationCounts,
  HostedAssociations,
  type ListedEip,
  TESTBED,
} from "./associations.ts";

const API_KEY = "crash-loop-key";
/** The loop's pool, EIP pool and project (with hosts, the testbed half adds its own). */
const crashConfig = (eipCidr: string): ConfigSpec => ({
  pools: [{ name: "vms", cidr: "10.30.0.0/23", gateway: "10.30.0.1" }],
  eipPools: { public: eipCidr },
  projects: [{ name: "crash", apiKey: API_KEY, quota: 1000 }],
});
const VM_IDS = Array.from({ length: 64 }, (_, i) => `crash-vm-${i}`);
/** Requested addresses come from a small range, so requests collide with each other and with next-fit. */
const REQUESTED = Array.from({ length: 40 }, (_, i) => `10.30.1.${i + 2}`);
const MAX_EIPS = 60;
const WORKERS = 16;

/** With hosts the daemon runs in the testbed's daemon namespace; TCP reaches it through a forward to this port. */
const NETNS_TCP_PORT = 18_417;

export interface CrashLoopOptions {
  readonly trials: number;
  readonly seed: number;
  /** Also associate EIPs with VMs on a namespace testbed (see associations.ts); needs root. */
  readonly hosts?: boolean;
  /**
   * A `[store]` section for the daemon's config (test/support/daemon-store.ts); the data directory's
   * LMDB store by default. With hosts it must name the database's Unix socket.
   */
  readonly store?: string;
  readonly log?: (line: string) => void;
}

export interface CrashLoopResult {
  readonly seed: number;
  trials: number;
  kills: number;
  violations: number;
  requests: number;
  acknowledged: number;
  inFlightAtKill: number;
  /** vm_id and EIP states asserted after restarts (acknowledged, not in flight at the kill). */
  checked: number;
  /** The association figures, with hosts. */
  readonly associations: AssociationCounts | null;
  readonly messages: string[];
}

/** What the model knows of a vm_id or EIP: held at an address, not held, or unknown (in flight at a kill). */
type Known = { kind: "held"; ip: string } | { kind: "free" } | { kind: "unknown" };

interface VmEntry {
  state: Known;
  busy: boolean;
}
interface EipEntry {
  state: Known;
  busy: boolean;
  idempotencyKey?: string;
  /** Instances it may be recorded associated with (see AssociableEip); always [null] without hosts. */
  instances: readonly (string | null)[];
}

interface Allocation {
  readonly vm_id: string;
  readonly ip: string;
}
type Eip = ListedEip;

export async function runCrashLoop(options: CrashLoopOptions): Promise<CrashLoopResult> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const random = seededRandom(options.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const result: CrashLoopResult = {
    seed: options.seed,
    trials: 0,
    kills: 0,
    violations: 0,
    requests: 0,
    acknowledged: 0,
    inFlightAtKill: 0,
    checked: 0,
    associations: options.hosts ? associationCounts() : null,
    messages: [],
  };
  let trial = 0;
  const violation = (what: string) => {
    result.violations++;
    const line = `VIOLATION seed ${options.seed} trial ${trial}: ${what}`;
    result.messages.push(line);
    log(line);
  };

  const vms = new Map<string, VmEntry>(VM_IDS.map((id) => [id, { state: { kind: "free" }, busy: false }]));
  const eips = new Map<string, EipEntry>();
  /** EIP allocations whose answer never came (killed): they may or may not exist after the restart. */
  let lostEipAllocations = 0;
  let idempotencyCounter = 0;

  const dir = tempDir("ippool-crash-");
  const bed = options.hosts ? await Testbed.create(TESTBED) : null;
  const hosted = bed && new HostedAssociations(bed, result.associations as AssociationCounts);
  const eipHeaders = { "x-api-key": API_KEY, "content-type": "application/json" };
  let daemon: Daemon | undefined;

  try {
    daemon = await start();
    await hosted?.registerGuests(daemon);
    for (trial = 1; trial <= options.trials; trial++) {
      // ---- traffic, then kill -9 at a random moment ----
      const d: Daemon = daemon;
      let killed = false;
      let inFlight = 0;
      // With hosts, associations take tens of ms over SSH: the traffic runs longer before the kill.
      const killAfterMs = hosted ? 20 + Math.floor(random() * 1200) : 5 + Math.floor(random() * 250);

      const vmOp = async (): Promise<void> => {
        const free = VM_IDS.filter((id) => !vms.get(id)?.busy);
        if (free.length === 0) return void (await Bun.sleep(1));
        const vmId = pick(free);
        const entry = vms.get(vmId) as VmEntry;
        const roll = random();
        let op: "alloc" | "alloc-ip" | "release" | "release-ip" =
          roll < 0.35 ? "alloc" : roll < 0.55 ? "alloc-ip" : roll < 0.8 ? "release" : "release-ip";
        if (op === "release-ip" && entry.state.kind !== "held") op = "release";
        const wantIp = op === "alloc-ip" ? pick(REQUESTED) : undefined;
        const heldIp = entry.state.kind === "held" ? entry.state.ip : undefined;
        entry.busy = true;
        inFlight++;
        result.requests++;
        const before = entry.state;
        try {
          let status: number;
          // biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field
          let body: any;
          /** For an allocate: whether the daemon says it made a new allocation (201 answers both). */
          let created = false;
          if (op === "alloc" || op === "alloc-ip") {
            const response = await d.fetch("/api/v1/ip/allocate", {
              method: "POST",
              body: JSON.stringify(wantIp ? { vm_id: vmId, ip: wantIp } : { vm_id: vmId }),
              via: random() < 0.5 ? "tcp" : "unix",
            });
            status = response.status;
            body = await response.json();
            created = response.headers.get("x-ippool-created") === "true";
          } else if (op === "release") {
            ({ status, body } = await d.json(`/api/v1/ip/release/${vmId}`, { method: "DELETE" }));
          } else {
            ({ status, body } = await d.json(`/api/v1/ip/release-by-ip/${heldIp}`, { method: "DELETE" }));
          }
          result.acknowledged++;
          if (op === "alloc" || op === "alloc-ip") {
            if (status === 201) {
              if (wantIp && body.ip !== wantIp)
                violation(`${vmId}: asked for ${wantIp}, answered ${status} ${body.ip}`);
              if (!created && before.kind === "held" && before.ip !== body.ip)
                violation(`${vmId}: repeat answered ${body.ip}, acknowledged address was ${before.ip}`);
              if (!created && before.kind === "free")
                violation(`${vmId}: answered a repeat but its acknowledged state is released`);
              if (created && before.kind === "held")
                violation(`${vmId}: answered a new allocation but it already held ${before.ip}`);
              entry.state = { kind: "held", ip: body.ip };
            } else if (status === 409 && body.code === "VM_HAS_OTHER_ADDRESS") {
              if (before.kind === "free")
                violation(`${vmId}: VM_HAS_OTHER_ADDRESS but its acknowledged state is released`);
            } else if (!(status === 409 && body.code === "ADDRESS_IN_USE")) {
              violation(`${vmId}: allocate answered ${status} ${JSON.stringify(body)}`);
              entry.state = { kind: "unknown" };
            }
          } else if (op === "release") {
            if (status === 200) {
              if (before.kind === "free") violation(`${vmId}: release answered 200 but it was acknowledged released`);
              entry.state = { kind: "free" };
            } else if (status === 404) {
              if (before.kind === "held") violation(`${vmId}: release answered 404 but it held ${before.ip}`);
              entry.state = { kind: "free" };
            } else {
              violation(`${vmId}: release answered ${status} ${JSON.stringify(body)}`);
              entry.state = { kind: "unknown" };
            }
          } else if (status === 200) {
            const released = (body.released ?? []) as Allocation[];
            if (released.length !== 1 || released[0]?.vm_id !== vmId)
              violation(`release-by-ip ${heldIp} (held by ${vmId}) released ${JSON.stringify(released)}`);
            entry.state = { kind: "free" };
          } else {
            violation(`release-by-ip ${heldIp} (acknowledged to ${vmId}) answered ${status} ${JSON.stringify(body)}`);
            entry.state = { kind: "unknown" };
          }
        } catch (error) {
          entry.state = { kind: "unknown" };
          if (!killed) violation(`${op} ${vmId} failed before the kill: ${error}`);
          else result.inFlightAtKill++;
        } finally {
          entry.busy = false;
          inFlight--;
        }
      };

      const eipOp = async (): Promise<void> => {
        const held = [...eips].filter(([, e]) => !e.busy && e.state.kind === "held");
        const allocate = held.length === 0 || (eips.size < MAX_EIPS && random() < 0.55);
        inFlight++;
        result.requests++;
        if (allocate) {
          const key = random() < 0.5 ? `crash-${options.seed}-${++idempotencyCounter}` : undefined;
          lostEipAllocations++;
          try {
            const { status, body } = await d.json("/elastic-ips", {
              method: "POST",
              headers: eipHeaders,
              body: JSON.stringify(key ? { idempotency_key: key } : {}),
              via: random() < 0.5 ? "tcp" : "unix",
            });
            lostEipAllocations--;
            result.acknowledged++;
            if (status === 201) {
              if (eips.has(body.id)) violation(`EIP allocate returned existing id ${body.id} as new`);
              eips.set(body.id, {
                state: { kind: "held", ip: body.public_ip },
                busy: false,
                instances: [null],
                ...(key ? { idempotencyKey: key } : {}),
              });
            } else violation(`EIP allocate answered ${status} ${JSON.stringify(body)}`);
          } catch (error) {
            if (!killed) {
              lostEipAllocations--;
              violation(`EIP allocate failed before the kill: ${error}`);
            } else result.inFlightAtKill++;
          } finally {
            inFlight--;
          }
          return;
        }
        const [id, entry] = pick(held);
        const associated = entry.instances[0] ?? null;
        entry.busy = true;
        try {
          const { status, body } = await d.json(`/elastic-ips/${id}`, { method: "DELETE", headers: eipHeaders });
          result.acknowledged++;
          if (status === 200 && associated === null) entry.state = { kind: "free" };
          else if (status === 409 && body.code === "STILL_ASSOCIATED" && associated !== null) {
            // Refused while associated: nothing changed.
          } else {
            violation(`EIP release ${id} answered ${status} ${JSON.stringify(body)}`);
            entry.state = { kind: "unknown" };
          }
        } catch (error) {
          entry.state = { kind: "unknown" };
          if (!killed) violation(`EIP release ${id} failed before the kill: ${error}`);
          else result.inFlightAtKill++;
        } finally {
          entry.busy = false;
          inFlight--;
        }
      };

      const traffic = {
        daemon: d,
        random,
        pick,
        violation,
        killed: () => killed,
        lost: () => void result.inFlightAtKill++,
        sent: () => void result.requests++,
        answered: () => void result.acknowledged++,
      };
      const worker = async () => {
        while (!killed) {
          const roll = random();
          if (!hosted) await (roll < 0.75 ? vmOp() : eipOp());
          else await (roll < 0.5 ? vmOp() : roll < 0.7 ? eipOp() : hosted.op(traffic, eips));
        }
      };
      const workers = Array.from({ length: WORKERS }, worker);
      await Bun.sleep(killAfterMs);
      if (hosted && random() < 0.7) await killDuringAssociation(hosted);
      const associating = hosted?.inFlight ?? 0;
      const pending = inFlight + associating;
      killed = true;
      await d.kill9();
      result.kills++;
      if (associating > 0 && result.associations) result.associations.killsDuringAssociation++;
      await Promise.all(workers);
      result.trials++;
      const during = hosted ? ` (${associating} associating)` : "";
      log(`trial ${trial}: killed after ${killAfterMs} ms with ${pending} requests in flight${during}`);

      // ---- restart on the same directory and check ----
      daemon = await start();
      await check(daemon);
    }
    if ((await daemon.stop()) !== 0) violation(`daemon did not stop cleanly:\n${daemon.logs}`);
    await fsck(daemon, "after the final SIGTERM");
  } finally {
    if (daemon && daemon.proc.exitCode === null) await daemon.kill9();
    await bed?.destroy();
    if (result.violations === 0) rmSync(dir, { recursive: true, force: true });
    else log(`data directory kept: ${dir}`);
  }
  return result;

  /** Starts the daemon on the run's directory; with hosts, in the daemon namespace, once its hosts are reconciled. */
  async function start(): Promise<Daemon> {
    if (!hosted) return Daemon.start({ config: configToml(crashConfig("100.64.0.0/24")) + (options.store ?? ""), dir });
    return startInTestbed(hosted, dir, options.store);
  }

  /**
   * Most kills with hosts land while an association is being applied: wait (a little) for one to
   * be in flight, then let it run a random part of its usual time.
   */
  async function killDuringAssociation(h: HostedAssociations): Promise<void> {
    const deadline = Date.now() + 500;
    while (h.inFlight === 0 && Date.now() < deadline) await Bun.sleep(1);
    await Bun.sleep(Math.floor(random() * 60));
  }

  async function fsck(d: Daemon, when: string): Promise<void> {
    const out = await runToExit(["fsck", "--config", d.configPath]);
    const summaries = out.stdout.split("\n").filter((line) => / allocations, \d+ problems$/.test(line));
    const clean = summaries.every((line) => line.endsWith(" 0 problems"));
    if (out.code !== 0 || !clean || !/^vms: \d+ allocations, 0 problems$/m.test(out.stdout))
      violation(`fsck ${when} exited ${out.code}:\n${out.stdout}${out.stderr}`);
  }

  async function check(d: Daemon): Promise<void> {
    // fsck first, while the restarted daemon is idle: it opens the same LMDB environment.
    await fsck(d, "after the restart");

    // VM pool: every acknowledged state survived, no address twice, list and stats agree.
    const listed = await d.json("/api/v1/ip/allocations?pool=vms");
    const list = listed.body as Allocation[];
    const byVm = new Map<string, string>();
    const byIp = new Map<string, string>();
    for (const a of list) {
      if (byVm.has(a.vm_id)) violation(`${a.vm_id} listed twice`);
      byVm.set(a.vm_id, a.ip);
      const other = byIp.get(a.ip);
      if (other !== undefined) violation(`${a.ip} held by both ${other} and ${a.vm_id}`);
      byIp.set(a.ip, a.vm_id);
    }
    const stats = (await d.json("/api/v1/ip/stats?pool=vms")).body as { allocated: number };
    if (stats.allocated !== list.length) violation(`stats say ${stats.allocated} allocated, list has ${list.length}`);
    for (const [vmId, entry] of vms) {
      const stored = byVm.get(vmId);
      if (entry.state.kind !== "unknown") result.checked++;
      if (entry.state.kind === "held" && stored !== entry.state.ip)
        violation(`${vmId}: acknowledged ${entry.state.ip} is lost (after restart: ${stored ?? "nothing"})`);
      if (entry.state.kind === "free" && stored !== undefined)
        violation(`${vmId}: acknowledged release undone (after restart it holds ${stored})`);
      entry.state = stored === undefined ? { kind: "free" } : { kind: "held", ip: stored };
    }
    for (const vmId of byVm.keys()) if (!vms.has(vmId)) violation(`unknown vm_id ${vmId} appeared`);

    // EIPs: acknowledged allocations present at their address, acknowledged releases gone.
    const eipList = (await d.json("/elastic-ips", { headers: eipHeaders })).body as Eip[];
    const byId = new Map<string, Eip>();
    const eipIps = new Map<string, string>();
    for (const e of eipList) {
      byId.set(e.id, e);
      const other = eipIps.get(e.public_ip);
      if (other !== undefined) violation(`EIP address ${e.public_ip} held by both ${other} and ${e.id}`);
      eipIps.set(e.public_ip, e.id);
    }
    // Associations (records, then hosts) before the loop below drops released EIPs from the model.
    await hosted?.check(d, eipList, eips, violation);
    for (const [id, entry] of [...eips]) {
      const stored = byId.get(id);
      if (entry.state.kind !== "unknown") result.checked++;
      if (entry.state.kind === "held" && stored?.public_ip !== entry.state.ip)
        violation(
          `EIP ${id}: acknowledged ${entry.state.ip} is lost (after restart: ${stored?.public_ip ?? "nothing"})`,
        );
      if (entry.state.kind === "free") {
        if (stored !== undefined) violation(`EIP ${id}: acknowledged release undone (${stored.public_ip})`);
        else {
          const got = await d.json(`/elastic-ips/${id}`, { headers: eipHeaders });
          if (got.status !== 404) violation(`EIP ${id}: acknowledged release, GET answers ${got.status}`);
        }
      }
      if (stored === undefined) eips.delete(id);
      else entry.state = { kind: "held", ip: stored.public_ip };
    }
    let appeared = 0;
    for (const e of eipList) {
      if (eips.has(e.id)) continue;
      appeared++;
      eips.set(e.id, { state: { kind: "held", ip: e.public_ip }, busy: false, instances: [e.instance_id ?? null] });
    }
    if (appeared > lostEipAllocations)
      violation(`${appeared} EIPs appeared, but only ${lostEipAllocations} allocations were unanswered`);
    lostEipAllocations = 0;
    // An acknowledged idempotency key replays to the same EIP after the restart.
    const keyed = [...eips].filter(([, e]) => e.idempotencyKey !== undefined);
    if (keyed.length > 0) {
      const [id, entry] = pick(keyed);
      const replay = await d.json("/elastic-ips", {
        method: "POST",
        headers: eipHeaders,
        body: JSON.stringify({ idempotency_key: entry.idempotencyKey }),
      });
      if (replay.status !== 200 || replay.body.id !== id)
        violation(`EIP ${id}: idempotency replay answered ${replay.status} ${replay.body.id}`);
    }
    const metrics = await (await d.fetch("/metrics")).text();
    const gauge = metrics
      .split("\n")
      .find((l) => l.startsWith("ippool_pool_addresses{") && /pool="public"/.test(l) && /state="allocated"/.test(l));
    const counted = gauge === undefined ? undefined : Number(gauge.trim().split(/\s+/).pop());
    if (counted !== eipList.length)
      violation(`metrics count ${counted} allocated EIP addresses, the project lists ${eipList.length}`);
  }
}

/**
 * Starts the daemon on `dir` in the testbed's daemon namespace (the crash loop's pools and project,
 * plus the hosts) and waits until every host is connected and reconciled. TCP reaches it through a
 * forward from the test process; the Unix socket directly.
 */
export async function startInTestbed(hosted: HostedAssociations, dir: string, store = ""): Promise<Daemon> {
  const { bed } = hosted;
  const socket = join(dir, "ippool.sock");
  const started = await Daemon.start({
    config:
      configToml({
        server: { listen: `127.0.0.1:${NETNS_TCP_PORT}`, socket, dataDir: dir },
        ...hosted.config(crashConfig(bed.eipCidr)),
      }) + store,
    dir,
    prefix: bed.daemonNetnsPrefix(),
  });
  const forward = await bed.forwardFromTestProcess("127.0.0.1", NETNS_TCP_PORT);
  started.baseUrl = `http://${forward.address}:${forward.port}`;
  await hosted.ready(started);
  return started;
}

function parseArgs(argv: readonly string[]): { trials: number; seed: number; hosts: boolean; postgres: boolean } {
  let trials = 20;
  let seed = Math.floor(Math.random() * 2 ** 31);
  let hosts = false;
  let postgres = false;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === "--hosts") hosts = true;
    else if (flag === "--postgres") postgres = true;
    else if ((flag === "--trials" || flag === "--seed") && value !== undefined && /^\d+$/.test(value)) {
      if (flag === "--trials") trials = Number(value);
      else seed = Number(value);
      i++;
    } else
      throw new Error(`usage: crash-loop.ts [--trials N] [--seed S] [--hosts] [--postgres] (bad argument ${flag})`);
  }
  return { trials, seed, hosts, postgres };
}

/** The figures of a run, one line each (the last one is the verdict). */
function summary(result: CrashLoopResult, seconds: string): string[] {
  const lines = [
    `requests ${result.requests}, acknowledged ${result.acknowledged}, in flight at kills ${result.inFlightAtKill}, states checked ${result.checked}, ${seconds} s, seed ${result.seed}`,
  ];
  const a = result.associations;
  if (a) {
    lines.push(
      `association requests ${a.associationRequests} (acknowledged ${a.associationsAcknowledged}), associations checked ${a.associationsChecked}, host mappings checked ${a.hostMappingsChecked}, raced releases ${a.racedReleases} (release won ${a.releasesWon}), kills during an association ${a.killsDuringAssociation}, late convergences ${a.lateConvergences}, probes ${a.probes} (slowest ${a.slowestProbeMs} ms)`,
    );
  }
  lines.push(`trials ${result.trials}, kills ${result.kills}, violations ${result.violations}`);
  return lines;
}

if (import.meta.main) {
  const { trials, seed, hosts, postgres } = parseArgs(process.argv.slice(2));
  console.log(
    `crash loop: seed ${seed}, ${trials} trials${hosts ? ", with hosts" : ""}${postgres ? ", on PostgreSQL" : ""}`,
  );
  const started = performance.now();
  // With hosts the daemon runs in a network namespace: it reaches the database through its Unix socket.
  const store = postgres ? await daemonStore("postgres", { overSocket: hosts }) : undefined;
  const result = await runCrashLoop({ trials, seed, hosts, ...(store ? { store: store.toml } : {}) }).finally(() =>
    store?.stop(),
  );
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  for (const line of summary(result, seconds)) console.log(line);
  process.exit(result.violations === 0 ? 0 : 1);
}
