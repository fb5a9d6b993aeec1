/**
 * SSH faults: one hypervisor host (hv1) misbehaves while the compiled daemon, in the testbed's
 * daemon namespace, keeps serving. For each fault (commands that hang, garbage output, the
 * connection dropped mid-command, a changed host key, the host down for a while):
 *   1. the daemon stays responsive: health, the pool API and EIP changes on the healthy host (hv2)
 *      answer within hv1's command timeout (a correctness bound: they must not wait on hv1);
 *   2. requests that need hv1 answer 200 or the documented 502 codes, never a 500 or a dropped
 *      connection; the first of several queued on hv1 waits for at most one reconciliation run;
 *   3. the recorded EIPs are exactly what the API acknowledged, no instance holds two EIPs;
 *   4. once hv1 is back, reconciliation makes every host's `ip ippool` maps and EIP /32s match
 *      the records, and each EIP associated with a VM reaches it from the uplink.
 *
 * How long each fault is held: SSH_FAULTS_HOLD_S (default 4) and, for the host that is down,
 * SSH_FAULTS_DOWN_S (default 6); `make soak` holds them for minutes. SSH_FAULTS_REPORT=1 prints
 * the measured latencies and convergence times.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configToml } from "../support/config-toml.ts";
import { Daemon } from "../support/daemon.ts";
import { eventually } from "../support/processes.ts";
import { parseExposition, sampleValue } from "../support/prometheus.ts";
import { type FaultMode, Testbed } from "../support/testbed.ts";

const COMMAND_TIMEOUT_MS = 3000;
const HOLD_S = Number(process.env.SSH_FAULTS_HOLD_S ?? 4);
const DOWN_S = Number(process.env.SSH_FAULTS_DOWN_S ?? 6);
/** Reconnect backoff reaches 30 s after a long outage; convergence gets that and room to spare. */
const CONVERGE_MS = 45_000;
const FAULTY = "hv1";
const HEALTHY = "hv2";
/** hv1's domains behind the EIPs disassociated during a fault: four, so they queue past 10 s on a hung host. */
const QUEUED = ["w1", "w2", "w3", "w4"];

let bed: Testbed;
let daemon: Daemon;
const figures: string[] = [];

beforeAll(async () => {
  bed = await Testbed.create({
    faults: true,
    hosts: [
      { name: FAULTY, vms: [{ name: "a1" }, { name: "a2" }], bareDomains: QUEUED.map((name) => ({ name })) },
      { name: HEALTHY, vms: [{ name: "b1" }, { name: "b2" }, { name: "b3" }, { name: "b4" }] },
    ],
  });
  daemon = await Daemon.start({ config: config(), prefix: bed.daemonNetnsPrefix() });
  const connected = async () => bed.hosts.every((h) => daemon.logs.includes(`host connected host=${h.name}`));
  expect(await eventually(connected, 10_000)).toBe(true);
  // As the libvirt hook records them; b3 without its host, so finding it asks every host.
  const placed = [
    ...bed.hosts.flatMap((h) => h.vms.map((vm) => ({ vm_id: vm.name, ip: vm.privateIp, host: h.name }))),
    ...QUEUED.map((name, i) => ({ vm_id: name, ip: `192.168.100.${101 + i}`, host: FAULTY })),
  ];
  for (const { host, ...allocation } of placed) {
    const body = allocation.vm_id === "b3" ? allocation : { ...allocation, host };
    expect((await daemon.post("/api/v1/ip/allocate", body, "unix")).status).toBe(201);
  }
}, 60_000);

afterAll(async () => {
  if (process.env.SHOW_DAEMON_LOGS) console.log(daemon?.logs);
  if (process.env.SSH_FAULTS_REPORT) console.log(figures.join("\n"));
  await daemon?.dispose();
  await bed?.destroy();
});

function config(): string {
  return configToml({
    reconcileIntervalS: 1,
    pools: [{ name: "vms", cidr: "192.168.100.0/24", gateway: "192.168.100.1" }],
    eipPools: { public: bed.eipCidr },
    projects: [{ name: "acme", apiKey: "acme-key", quota: 20 }],
    hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: COMMAND_TIMEOUT_MS }),
  });
}

// ---- talking to the daemon ---------------------------------------------------------------------

interface Answer {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field
  readonly body: any;
  readonly ms: number;
  readonly what: string;
}

async function call(method: string, path: string, body?: unknown): Promise<Answer> {
  const started = performance.now();
  const { status, body: answer } = await daemon.json(path, {
    method,
    via: "unix",
    headers: { "content-type": "application/json", "x-project": "acme" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status, body: answer, ms: performance.now() - started, what: `${method} ${path}` };
}

interface Recorded {
  readonly state: string;
  readonly instance_id?: string;
  readonly host?: string;
}

/** What the API acknowledged for each EIP: what the records must show. */
const acknowledged = new Map<string, Recorded>();

function remember(answer: Answer): Answer {
  if (answer.status === 200 || answer.status === 201) {
    const { id, state, instance_id, host } = answer.body;
    acknowledged.set(id, { state, ...(instance_id ? { instance_id, host } : {}) });
  }
  return answer;
}

const allocateEip = async () => remember(await call("POST", "/elastic-ips")).body.id as string;
const associate = async (id: string, instance_id: string, allow_reassociation = false) =>
  remember(await call("POST", `/elastic-ips/${id}/associate`, { instance_id, allow_reassociation }));
const disassociate = async (id: string) => remember(await call("POST", `/elastic-ips/${id}/disassociate`));

async function releaseEip(id: string): Promise<void> {
  expect((await call("DELETE", `/elastic-ips/${id}`)).status).toBe(200);
  acknowledged.delete(id);
}

/**
 * Once hv1 is connected again, releases every EIP the project holds (disassociating first), as
 * the daemon has them. A disassociation whose client gave up may still land: NOT_ASSOCIATED then.
 */
async function releaseAll(): Promise<void> {
  expect(await eventually(async () => (await hostUp(FAULTY)) === 1, CONVERGE_MS)).toBe(true);
  for (const eip of (await call("GET", "/elastic-ips")).body) {
    if (eip.state === "associated") expectOneOf(await disassociate(eip.id), [[200], [409, "NOT_ASSOCIATED"]]);
    await releaseEip(eip.id);
  }
}

async function hostUp(host: string): Promise<number> {
  const response = await daemon.fetch("/metrics", { via: "unix" });
  return sampleValue(parseExposition(await response.text()), "ippool_host_up", { host });
}

// ---- the checks --------------------------------------------------------------------------------

/** Latencies by operation. */
class Latencies {
  private readonly byOp = new Map<string, number[]>();
  add(op: string, answer: Answer): Answer {
    this.byOp.set(op, [...(this.byOp.get(op) ?? []), answer.ms]);
    return answer;
  }
  max(): number {
    return Math.max(0, ...[...this.byOp.values()].flat());
  }
  summary(): string {
    return [...this.byOp].map(([op, ms]) => `${op} ≤${Math.max(...ms).toFixed(0)} ms (n=${ms.length})`).join(", ");
  }
}

/**
 * One round of work that needs only the daemon and hv2: health, the pool API, an EIP associated
 * and disassociated on hv2 by recorded host, and again with b3, which ippool finds by asking
 * every host. Every answer must be a success.
 */
async function healthyRound(latencies: Latencies, round: number): Promise<void> {
  const x = await allocateEip();
  const steps: [string, () => Promise<Answer>][] = [
    ["health", () => call("GET", "/api/v1/health")],
    ["pools", () => call("GET", "/api/v1/pools")],
    ["allocate", () => call("POST", "/api/v1/ip/allocate", { vm_id: `round-${round}` })],
    ["release", () => call("DELETE", `/api/v1/ip/release/round-${round}`)],
    ["associate hv2", () => associate(x, "b2")],
    ["disassociate hv2", () => disassociate(x)],
    ["associate b3 (looked up)", () => associate(x, "b3")],
    ["disassociate b3", () => disassociate(x)],
  ];
  for (const [op, step] of steps) {
    const answer = latencies.add(op, await step());
    expect(answer.status, `${answer.what}: ${JSON.stringify(answer.body)}`).toBeLessThan(300);
  }
  await releaseEip(x);
}

type Allowed = readonly (readonly [number, string?])[];

/** The answer is one of `allowed` (a status, or a status and a code). */
function expectOneOf(answer: Answer, allowed: Allowed): void {
  const ok = allowed.some(
    ([status, code]) => answer.status === status && (code === undefined || answer.body?.code === code),
  );
  expect(ok, `${answer.what} answered ${answer.status} ${JSON.stringify(answer.body)}`).toBe(true);
}

/** The host each instance (VM or bare domain) lives on. */
function hostOf(instance: string): string | undefined {
  return bed.hosts.find((h) => [...h.vms, ...h.bareDomains].some((d) => d.name === instance))?.name;
}

/** The daemon's records equal what it acknowledged; no instance holds two EIPs, each on its host. */
async function expectRecordsAsAcknowledged(): Promise<void> {
  const { status, body } = await call("GET", "/elastic-ips");
  expect(status).toBe(200);
  const recorded = new Map<string, Recorded>(
    body.map((e: Recorded & { id: string }) => [
      e.id,
      { state: e.state, ...(e.instance_id ? { instance_id: e.instance_id, host: e.host } : {}) },
    ]),
  );
  expect(recorded).toEqual(acknowledged);
  const associated = body.filter((e: Recorded) => e.instance_id) as Required<Recorded>[];
  expect(new Set(associated.map((e) => e.instance_id)).size).toBe(associated.length);
  for (const e of associated) expect(e.host).toBe(hostOf(e.instance_id) as string);
}

/** `EIP>private IP` pairs the records put on a host. */
async function wantedOn(host: string): Promise<string[]> {
  const { body } = await call("GET", "/elastic-ips?state=associated");
  return body
    .filter((e: { host: string }) => e.host === host)
    .map((e: { public_ip: string; private_ip: string }) => `${e.public_ip}>${e.private_ip}`)
    .sort();
}

/** What a host carries: its eip_dnat pairs, its eip_snat pairs (turned around) and its EIP /32s. */
async function carriedBy(host: string): Promise<{ dnat: string[]; snat: string[]; addresses: string[] }> {
  const { code, stdout } = await bed.hostExec(host, ["nft", "-j", "list", "table", "ip", "ippool"]);
  const maps = new Map<string, [string, string][]>();
  for (const item of code === 0 ? JSON.parse(stdout).nftables : []) {
    if (item.map) maps.set(item.map.name, item.map.elem ?? []);
  }
  const pairs = (name: string, flip: boolean) =>
    (maps.get(name) ?? []).map(([k, v]) => (flip ? `${v}>${k}` : `${k}>${v}`)).sort();
  const eipNet = `${bed.eipCidr.split(".").slice(0, 3).join(".")}.`;
  return {
    dnat: pairs("eip_dnat", false),
    snat: pairs("eip_snat", true),
    addresses: (await bed.hostAddresses(host)).filter((a) => a.startsWith(eipNet)).sort(),
  };
}

async function hostMatchesRecords(host: string): Promise<boolean> {
  const want = await wantedOn(host);
  const { dnat, snat, addresses } = await carriedBy(host);
  const eips = want.map((pair) => pair.split(">")[0]).sort();
  return Bun.deepEquals(dnat, want) && Bun.deepEquals(snat, want) && Bun.deepEquals(addresses, eips);
}

/** Waits until every host carries exactly the recorded associations; resolves with the milliseconds it took. */
async function converged(): Promise<number> {
  const started = performance.now();
  const all = async () => (await Promise.all(bed.hosts.map((h) => hostMatchesRecords(h.name)))).every(Boolean);
  if (!(await eventually(all, CONVERGE_MS))) {
    const state = await Promise.all(
      bed.hosts.map(async (h) => [h.name, await wantedOn(h.name), await carriedBy(h.name)]),
    );
    throw new Error(`hosts did not converge within ${CONVERGE_MS} ms: ${JSON.stringify(state)}`);
  }
  return performance.now() - started;
}

/** Each EIP associated with a VM (bare domains have none behind them) reaches it from the uplink. */
async function expectTrafficFollowsRecords(): Promise<void> {
  const vms = new Set(bed.hosts.flatMap((h) => h.vms.map((vm) => vm.name)));
  const { body } = await call("GET", "/elastic-ips?state=associated");
  for (const eip of body.filter((e: { instance_id: string }) => vms.has(e.instance_id))) {
    await bed.probeUntil(eip.public_ip, eip.instance_id, 10_000);
  }
}

/** Waits for every promise (none is left running into the clean-up), then throws the first failure. */
async function allSettled(promises: readonly Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

// ---- the scenario ------------------------------------------------------------------------------

interface Fault {
  readonly name: string;
  readonly holdS: number;
  inject(): Promise<void>;
  recover(): Promise<void>;
  /** What associating an instance on the faulty host answers. */
  readonly associate: Allowed;
  /** What disassociating an EIP on the faulty host answers. */
  readonly disassociate: Allowed;
}

const UNREACHABLE: Allowed = [[502, "HOST_UNAVAILABLE"]];

function shimFault(mode: FaultMode, associate: Allowed, disassociate: Allowed): Fault {
  return {
    name: mode,
    holdS: HOLD_S,
    inject: async () => bed.setFault(FAULTY, mode),
    recover: async () => bed.setFault(FAULTY, "none"),
    associate,
    disassociate,
  };
}

interface Eips {
  /** On a1 before the fault; moved to hv2's b4 once it has been held. */
  readonly moved: string;
  /** On w1..w4 before the fault; disassociated together once it has been held. */
  readonly queued: string[];
  /** Associated with a2 during the fault. */
  readonly fresh: string;
}

async function setUp(): Promise<Eips> {
  const eips: Eips = { moved: await allocateEip(), queued: [], fresh: await allocateEip() };
  const pairs: [string, string][] = [
    [eips.moved, "a1"],
    [await allocateEip(), "b1"],
  ];
  for (const instance of QUEUED) {
    const id = await allocateEip();
    eips.queued.push(id);
    pairs.push([id, instance]);
  }
  for (const [id, instance] of pairs) expect((await associate(id, instance)).status).toBe(200);
  await converged();
  return eips;
}

/**
 * While the fault holds, concurrently: healthy rounds (at least for `holdS`), and what needs hv1:
 * an association and the leak check at once, then after `holdS` (when a hung host has had time to
 * pile up work) the four disassociations together, and the move off hv1 (which must not wait for
 * it; its clean-up there queues behind the disassociations).
 */
async function duringFault(fault: Fault, eips: Eips, healthy: Latencies, needsFaulty: Answer[]): Promise<void> {
  const injected = performance.now();
  const held = () => performance.now() - injected >= fault.holdS * 1000;
  const rounds = async () => {
    let round = 0;
    do await healthyRound(healthy, round++);
    while (!held());
  };
  const faulty = async () => {
    needsFaulty.push(...(await Promise.all([associate(eips.fresh, "a2"), call("GET", "/api/v1/leaks")])));
    await Bun.sleep(Math.max(0, fault.holdS * 1000 - (performance.now() - injected)));
    const [move, ...queued] = await Promise.all([
      associate(eips.moved, "b4", true),
      ...eips.queued.map((id) => disassociate(id)),
    ]);
    healthy.add("move off hv1", move as Answer);
    needsFaulty.push(...queued);
  };
  await allSettled([rounds(), faulty()]);
}

function checkAnswers(fault: Fault, eips: Eips, healthy: Latencies, needsFaulty: Answer[]): void {
  expect(healthy.max(), healthy.summary()).toBeLessThan(COMMAND_TIMEOUT_MS);
  expect(acknowledged.get(eips.moved)).toEqual({ state: "associated", instance_id: "b4", host: HEALTHY });
  const [fresh, leaks, ...queued] = needsFaulty as [Answer, Answer, ...Answer[]];
  expectOneOf(fresh, fault.associate);
  expectOneOf(leaks, [[200], [503, "LEAK_CHECK_INCOMPLETE"]]);
  for (const answer of queued) expectOneOf(answer, fault.disassociate);
  // The first in line waits for at most the one reconciliation run ahead of it, then makes its own
  // change: each is one command timeout at worst (their commands run side by side), so about 2
  // timeouts; 3 leaves room for a loaded machine, while runs piling up (14.1 s before they were
  // coalesced) still exceed it. A bound set by the timeouts, not by the machine's speed.
  expect(Math.min(...queued.map((a) => a.ms))).toBeLessThan(3 * COMMAND_TIMEOUT_MS);
}

async function runScenario(fault: Fault): Promise<void> {
  const eips = await setUp();
  const healthy = new Latencies();
  const needsFaulty: Answer[] = [];
  let recovered = false;
  await fault.inject();
  const injected = performance.now();
  try {
    await duringFault(fault, eips, healthy, needsFaulty);
    checkAnswers(fault, eips, healthy, needsFaulty);
    await expectRecordsAsAcknowledged();
    expect(await eventually(() => hostMatchesRecords(HEALTHY), 5000)).toBe(true);

    const heldMs = performance.now() - injected;
    await fault.recover();
    recovered = true;
    const convergedMs = await converged();
    await expectRecordsAsAcknowledged();
    await expectTrafficFollowsRecords();
    report(fault, heldMs, healthy, needsFaulty, convergedMs);
  } catch (error) {
    // Leave hv1 healthy and the instances free for the next scenario, then report this failure.
    if (!recovered) await fault.recover();
    await releaseAll().catch(() => {});
    throw error;
  }
  await releaseAll();
}

function report(fault: Fault, heldMs: number, healthy: Latencies, needsFaulty: Answer[], convergedMs: number): void {
  const faulty = needsFaulty.map(
    (a) => `${a.what.split("/").pop()} ${a.status} ${a.body?.code ?? ""} ${a.ms.toFixed(0)} ms`,
  );
  figures.push(
    `${fault.name}: held ${(heldMs / 1000).toFixed(1)} s; healthy: ${healthy.summary()}; ` +
      `needing hv1: ${faulty.join(", ")}; converged ${convergedMs.toFixed(0)} ms after recovery`,
  );
}

// ---- the tests ---------------------------------------------------------------------------------

test("without faults: the healthy round succeeds and every host matches the records", async () => {
  const latencies = new Latencies();
  for (let round = 0; round < 3; round++) await healthyRound(latencies, 1000 + round);
  await converged();
  await expectRecordsAsAcknowledged();
  figures.push(`baseline: ${latencies.summary()}`);
}, 30_000);

describe("a faulty host holds up no other host, fails its own requests with 502, and converges once back", () => {
  const timeout = (HOLD_S + 40) * 1000 + CONVERGE_MS;

  test(
    "its commands hang (killed at the command timeout)",
    async () => {
      await runScenario(shimFault("hang", [[502, "HOST_COMMAND_FAILED"]], [[502, "HOST_COMMAND_FAILED"]]));
    },
    timeout,
  );

  test(
    "it prints garbage and exits 0",
    async () => {
      // The garbled domain state is refused; a removal "succeeds" on a host that lies, and
      // reconciliation removes the rules once it tells the truth again.
      await runScenario(shimFault("garbage", [[502, "HOST_COMMAND_FAILED"]], [[200]]));
      expect(daemon.logs).toMatch(/reconciliation failed host=hv1 error="[^"\n]*printed output that cannot be read/);
    },
    timeout,
  );

  test(
    "it drops the connection mid-command (after the command ran)",
    async () => {
      // The host is then unreachable: a disassociation is recorded and its rules left to reconciliation.
      await runScenario(shimFault("drop", UNREACHABLE, [[200]]));
    },
    timeout,
  );

  test(
    "it presents a changed host key: refused, logged and reported down until the pinned key is back",
    async () => {
      await runScenario({
        name: "changed host key",
        holdS: HOLD_S,
        inject: async () => {
          const from = daemon.logs.length;
          const presented = await bed.rotateHostKey(FAULTY);
          const refused = async () => daemon.logs.slice(from).includes(`presented host key ${presented}`);
          expect(await eventually(refused, 10_000)).toBe(true);
          expect(await hostUp(FAULTY)).toBe(0);
          expect(await hostUp(HEALTHY)).toBe(1);
        },
        recover: () => bed.restoreHostKey(FAULTY),
        associate: [[502, "HOST_KEY_MISMATCH"]],
        disassociate: [[200]],
      });
    },
    timeout,
  );

  test(
    `it is down for ${DOWN_S} s: moves and disassociations made meanwhile hold, its leftovers are removed`,
    async () => {
      await runScenario({
        name: `down ${DOWN_S} s`,
        holdS: DOWN_S,
        inject: () => bed.hostDown(FAULTY),
        recover: () => bed.hostUp(FAULTY),
        // Unreachable once the daemon has seen its connection go; a command sent on it before
        // that (the killed sshd's FIN can trail the link going down) times out instead. Seen
        // once in CI (2026-12-04): `virsh … domstate a2` timed out after 3000 ms.
        associate: [...UNREACHABLE, [502, "HOST_COMMAND_FAILED"]],
        disassociate: [[200]],
      });
    },
    (DOWN_S + 40) * 1000 + CONVERGE_MS,
  );
});
