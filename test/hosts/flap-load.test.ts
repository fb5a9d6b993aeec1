/**
 * The pool API under sustained allocate/release load while a hypervisor host flaps: the compiled
 * daemon runs in the testbed's daemon namespace with two hosts, reconciling every second; hv1 goes
 * away (off the network, or only its sshd) and comes back CYCLES times, each time until the daemon
 * has reconnected (so every cycle is a real drop, however slow the machine), while one EIP on it is
 * associated and disassociated over and over. The pool API never needs a host, so none of this may
 * show in its answers: every request is answered 2xx, every acknowledged change is in the store,
 * `ippool fsck` is clean, and once hv1 stays up its NAT table converges to the records. Timing is
 * measured by bench/flap.ts, not here.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type EipAnswer, EipTrickle, FLAP_MODES, type FlapMode, takeHost } from "../support/flapping.ts";
import { eventually } from "../support/processes.ts";
import { Testbed } from "../support/testbed.ts";

const CYCLES = 3;
/** How long hv1 stays down, and up after the daemon reconnected, in each cycle. */
const DOWN_MS = 500;
const UP_MS = 300;
const WORKERS = 16;
const TRICKLE_MS = 150;
let bed: Testbed;
let daemon: Daemon;
/** The daemon's TCP listener as the test process reaches it (through the daemon namespace). */
let tcpBase: string;
let trickleEip: string;
/** Every acknowledged change: vm_id → its address, or null once its release was acknowledged. */
const acknowledged = new Map<string, string | null>();

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", bareDomains: [{ name: "hv1-a" }, { name: "hv1-b" }] },
      { name: "hv2", bareDomains: [{ name: "hv2-a" }] },
    ],
  });
  daemon = await Daemon.start({
    prefix: bed.daemonNetnsPrefix(),
    config: configToml({
      reconcileIntervalS: 1,
      pools: [
        { name: "vms", cidr: "10.30.0.0/16" },
        { name: "eipvms", cidr: "192.168.96.0/24" },
      ],
      eipPools: { public: bed.eipCidr },
      projects: [{ name: "acme", apiKey: "flap-load" }],
      hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 2000 }),
    }),
  });
  const port = new URL(daemon.baseUrl).port;
  const forward = await bed.forwardFromTestProcess("127.0.0.1", Number(port));
  tcpBase = `http://${forward.address}:${forward.port}`;
  expect(await eventually(async () => connected(["hv1", "hv2"]), 10_000)).toBe(true);
  // hv1-a and hv2-a hold EIPs throughout, so reconciliation has rules to keep on both hosts.
  for (const [i, domain] of ["hv1-a", "hv1-b", "hv2-a"].entries()) {
    const host = domain.slice(0, 3);
    const placed = await daemon.post(
      "/api/v1/ip/allocate",
      { vm_id: domain, ip: `192.168.96.${10 + i}`, host, pool: "eipvms" },
      "unix",
    );
    expect(placed.status).toBe(201);
  }
  for (const domain of ["hv1-a", "hv2-a"]) {
    const eip = await eipCall("POST", "/elastic-ips", {});
    expect((await eipCall("POST", `/elastic-ips/${eip.body.id}/associate`, { instance_id: domain })).status).toBe(200);
  }
  trickleEip = (await eipCall("POST", "/elastic-ips", {})).body.id;
}, 60_000);

afterAll(async () => {
  if (process.env.SHOW_DAEMON_LOGS) console.log(daemon?.logs);
  await daemon?.dispose();
  await bed?.destroy();
});

function connected(hosts: readonly string[], since = 0): boolean {
  const logs = daemon.logs.slice(since);
  return hosts.every((host) => logs.includes(`host connected host=${host}`));
}

function eipCall(method: string, path: string, body?: unknown): Promise<EipAnswer> {
  return daemon.json(path, {
    method,
    via: "unix",
    headers: { "content-type": "application/json", "x-project": "acme" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** One pool API call over TCP (even n) or the Unix socket (odd n); a failed request is an answer of status 0. */
async function poolCall(n: number, method: string, path: string, body?: unknown) {
  const init = {
    method,
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  };
  try {
    const response =
      n % 2 === 0 ? await fetch(`${tcpBase}${path}`, init) : await daemon.fetch(path, { ...init, via: "unix" });
    return { status: response.status, body: (await response.json()) as { ip?: string; code?: string } };
  } catch (error) {
    return { status: 0, body: { code: String(error) } };
  }
}

/**
 * Allocates `<prefix>-<worker>-<n>` one after another and releases every other one right after,
 * while `running()`; records acknowledged changes, and every answer that is not the expected 2xx.
 */
async function worker(prefix: string, id: number, running: () => boolean, unexpected: string[]): Promise<void> {
  for (let n = 0; running(); n++) {
    const vm = `${prefix}-${id}-${n}`;
    const allocated = await poolCall(n, "POST", "/api/v1/ip/allocate", { vm_id: vm, pool: "vms" });
    if (allocated.status !== 201 || !allocated.body.ip) {
      unexpected.push(`allocate ${vm}: ${allocated.status} ${JSON.stringify(allocated.body)}`);
      continue;
    }
    acknowledged.set(vm, allocated.body.ip);
    if (n % 2 === 1) continue;
    const released = await poolCall(n / 2, "DELETE", `/api/v1/ip/release/${vm}?pool=vms`);
    if (released.status === 200) acknowledged.set(vm, null);
    else unexpected.push(`release ${vm}: ${released.status} ${JSON.stringify(released.body)}`);
  }
}

/** The store as the API lists it agrees with every acknowledged change, and holds no address twice. */
async function checkAcknowledged(): Promise<void> {
  const listed = await daemon.json("/api/v1/ip/allocations?pool=vms", { via: "unix" });
  const list = listed.body as { vm_id: string; ip: string }[];
  const stored = new Map(list.map((a) => [a.vm_id, a.ip]));
  const wrong = [...acknowledged].filter(([vm, ip]) => (stored.get(vm) ?? null) !== ip);
  expect(wrong.slice(0, 5)).toEqual([]);
  expect(new Set(list.map((a) => a.ip)).size).toBe(list.length);
  expect((await daemon.json("/api/v1/ip/stats?pool=vms", { via: "unix" })).body.allocated).toBe(list.length);
}

/** hv1 goes away and comes back `CYCLES` times, each time until the daemon has reconnected to it. */
async function flap(mode: FlapMode): Promise<void> {
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const since = daemon.logs.length;
    await takeHost(bed, "hv1", mode, "down");
    await Bun.sleep(DOWN_MS);
    await takeHost(bed, "hv1", mode, "up");
    expect(await eventually(async () => connected(["hv1"], since), 15_000)).toBe(true);
    await Bun.sleep(UP_MS);
  }
}

/** hv1's DNAT map holds exactly the EIPs recorded as associated there. */
async function hv1MatchesRecords(): Promise<boolean> {
  const eips = (await eipCall("GET", "/elastic-ips?state=associated")).body as { host: string; public_ip: string }[];
  const recorded = eips
    .filter((e) => e.host === "hv1")
    .map((e) => e.public_ip)
    .sort();
  const { stdout } = await bed.hostExec("hv1", ["nft", "-j", "list", "map", "ip", "ippool", "eip_dnat"]);
  const elements = (JSON.parse(stdout || "{}") as { nftables?: { map?: { elem?: [string, string][] } }[] }).nftables;
  const onHost = (elements ?? []).flatMap((item) => item.map?.elem?.map(([eip]) => eip) ?? []).sort();
  return JSON.stringify(onHost) === JSON.stringify(recorded);
}

describe.each(FLAP_MODES)("allocate/release load while hv1 flaps (%s)", (mode) => {
  test("every pool API answer is 2xx, acknowledged changes are stored, fsck is clean, hv1 converges", async () => {
    const logsBefore = daemon.logs.length;
    const trickle = new EipTrickle(eipCall, trickleEip, "hv1-b", TRICKLE_MS);
    const unexpected: string[] = [];
    let flapping = true;
    const load = Promise.all(Array.from({ length: WORKERS }, (_, id) => worker(mode, id, () => flapping, unexpected)));
    try {
      await flap(mode);
    } finally {
      flapping = false;
      await load;
    }
    const eipAnswers = await trickle.stop();

    expect(unexpected.slice(0, 5)).toEqual([]);
    // The flapping was real: the daemon lost hv1 every cycle, and EIP changes on it were refused.
    const drops = daemon.logs.slice(logsBefore).match(/host disconnected host=hv1\b/g) ?? [];
    expect(drops.length).toBe(CYCLES);
    expect(eipAnswers.get("associate 502 HOST_UNAVAILABLE")).toBeGreaterThan(0);
    // Host trouble is a 502 with a host code, never anything else.
    for (const answer of eipAnswers.keys()) {
      expect(answer).toMatch(/^(associate|disassociate) (200|502 HOST_UNAVAILABLE|502 HOST_COMMAND_FAILED)$/);
    }
    expect([...acknowledged.keys()].filter((vm) => vm.startsWith(`${mode}-`)).length).toBeGreaterThan(WORKERS);

    await checkAcknowledged();
    const fsck = await runToExit(["fsck", "--config", daemon.configPath]);
    expect(fsck.stdout).toMatch(/^vms: \d+ allocations, 0 problems$/m);
    expect(fsck.code).toBe(0);
    // hv1 stays up now: the daemon reconnects and reconciliation makes its table match the records.
    expect(await eventually(hv1MatchesRecords, 20_000)).toBe(true);
  }, 60_000);
});
