/**
 * Elastic IPs in fleet mode against real hosts: two compiled daemons on one PostgreSQL database
 * (reached over its Unix socket from the testbed's daemon namespace), both serving the same two
 * hypervisor hosts over real OpenSSH, change the same EIPs and instances at the same moment. Only
 * the database's locks stand between them: each daemon's in-process locks know nothing of the
 * other. After every race the hosts' NAT state (read with `nft -j` and `ip -j`, not the daemon's
 * parser) must be exactly what the records say, and traffic from the uplink must reach the VM the
 * record names. Periodic reconciliation is off, so it cannot mend what a race left wrong: the
 * changes themselves must leave the hosts right (without the database's locks, the moves' test
 * fails here for that reason).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { disagreements } from "../crash/host-state.ts";
import { configToml } from "../support/config-toml.ts";
import { Daemon } from "../support/daemon.ts";
import { type DaemonStore, daemonStore } from "../support/daemon-store.ts";
import { eventually } from "../support/processes.ts";
import { Testbed } from "../support/testbed.ts";

const ROUNDS = 6;
let bed: Testbed;
let store: DaemonStore;
let daemons: [Daemon, Daemon];

function config(name: string): string {
  return (
    configToml({
      reconcileIntervalS: 0,
      pools: [{ name: "vms", cidr: "192.168.100.0/24", gateway: "192.168.100.1" }],
      eipPools: { public: bed.eipCidr },
      projects: [{ name: "acme", apiKey: "acme-api-key", quota: 50 }],
      hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 5000 }),
    }) + store.tomlFor(name)
  );
}

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", vms: [{ name: "a-1" }, { name: "a-2" }] },
      { name: "hv2", vms: [{ name: "b-1" }, { name: "b-2" }] },
    ],
  });
  store = await daemonStore("postgres", { overSocket: true });
  const prefix = bed.daemonNetnsPrefix();
  daemons = [
    await Daemon.start({ config: config("fleet-1"), prefix }),
    await Daemon.start({ config: config("fleet-2"), prefix }),
  ];
  const connected = async () =>
    daemons.every((d) => bed.hosts.every((h) => d.logs.includes(`host connected host=${h.name}`)));
  expect(await eventually(connected, 15_000)).toBe(true);
  // What the libvirt hook does at VM start, each host's VMs through a different daemon.
  for (const [i, host] of bed.hosts.entries()) {
    for (const vm of host.vms) {
      const body = { vm_id: vm.name, ip: vm.privateIp, host: host.name };
      expect((await daemons[i % 2]?.post("/api/v1/ip/allocate", body, "unix"))?.status).toBe(201);
    }
  }
}, 90_000);

afterAll(async () => {
  if (process.env.SHOW_DAEMON_LOGS) for (const d of daemons ?? []) console.log(d.logs);
  for (const d of daemons ?? []) await d?.dispose();
  await store?.stop();
  await bed?.destroy();
});

function eipCall(d: Daemon, method: string, path: string, body?: unknown) {
  return d.json(path, {
    method,
    via: "unix",
    headers: { "content-type": "application/json", "x-project": "acme" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}
const [first, second] = [() => daemons[0], () => daemons[1]];
const associate = (d: Daemon, id: string, instance_id: string, allow_reassociation = false) =>
  eipCall(d, "POST", `/elastic-ips/${id}/associate`, { instance_id, allow_reassociation });

/** The project's EIPs as either daemon lists them: both must list the same records. */
async function records() {
  const [a, b] = await Promise.all(daemons.map((d) => eipCall(d, "GET", "/elastic-ips")));
  expect(a?.body).toEqual(b?.body);
  return a?.body;
}

/** Waits until both hosts hold exactly the recorded associations; fails with the differences. */
async function hostsAgree(): Promise<void> {
  let problems: string[] = [];
  const agree = async () => {
    problems = await disagreements(bed, await records());
    return problems.length === 0;
  };
  if (!(await eventually(agree, 10_000))) throw new Error(`hosts disagree with the records:\n${problems.join("\n")}`);
}

/** Disassociates and releases every EIP of the project, through the first daemon. */
async function releaseAll(): Promise<void> {
  for (const eip of await records()) {
    if (eip.state === "associated")
      expect((await eipCall(first(), "POST", `/elastic-ips/${eip.id}/disassociate`)).status).toBe(200);
    expect((await eipCall(first(), "DELETE", `/elastic-ips/${eip.id}`)).status).toBe(200);
  }
  await hostsAgree();
}

describe("two daemons on one database, two real hosts", () => {
  test("associating one EIP with VMs on different hosts at once through both: exactly one wins, and only its host carries the EIP", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const eip = (await eipCall(first(), "POST", "/elastic-ips")).body;
      // Alternate which daemon asks for which host, so neither order is the only one tried.
      const [toA, toB] = round % 2 === 0 ? [first(), second()] : [second(), first()];
      const answers = await Promise.all([associate(toA, eip.id, "a-1"), associate(toB, eip.id, "b-1")]);
      const won = answers.filter((a) => a.status === 200);
      const lost = answers.filter((a) => a.status !== 200);
      expect(won).toHaveLength(1);
      expect(lost.map((a) => [a.status, a.body.code])).toEqual([[409, "ALREADY_ASSOCIATED"]]);
      const winner = won[0]?.body.instance_id as string;
      expect((await eipCall(second(), "GET", `/elastic-ips/${eip.id}`)).body.instance_id).toBe(winner);
      await hostsAgree();
      expect(await bed.probe(eip.public_ip, { timeoutMs: 2000 })).toBe(winner);
      await releaseAll();
    }
  }, 120_000);

  test("moving one associated EIP at once through both daemons: each move runs alone, the last one recorded is the one the hosts carry and traffic reaches", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const eip = (await eipCall(first(), "POST", "/elastic-ips")).body;
      expect((await associate(first(), eip.id, "a-1")).status).toBe(200);
      const answers = await Promise.all([
        associate(first(), eip.id, "a-2", true),
        associate(second(), eip.id, "b-2", true),
      ]);
      expect(answers.map((a) => a.status)).toEqual([200, 200]);
      const recorded = (await eipCall(second(), "GET", `/elastic-ips/${eip.id}`)).body;
      expect(["a-2", "b-2"]).toContain(recorded.instance_id);
      expect(recorded.host).toBe(bed.vm(recorded.instance_id).host);
      // Each move ran alone: the later one started from the earlier one's record, so neither
      // answer can name a-1 and the record is one of the two answers.
      expect(answers.map((a) => a.body.instance_id).sort()).toEqual(["a-2", "b-2"]);
      await hostsAgree();
      await bed.probeUntil(eip.public_ip, recorded.instance_id, 5000);
      await releaseAll();
    }
  }, 120_000);

  test("two EIPs associated with one instance at once through both daemons: exactly one wins with INSTANCE_HAS_EIP for the other", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const [x, y] = [
        (await eipCall(first(), "POST", "/elastic-ips")).body,
        (await eipCall(second(), "POST", "/elastic-ips")).body,
      ];
      const target = round % 2 === 0 ? "a-2" : "b-1";
      const answers = await Promise.all([associate(first(), x.id, target), associate(second(), y.id, target)]);
      expect(answers.map((a) => a.status).sort()).toEqual([200, 409]);
      expect(answers.find((a) => a.status === 409)?.body.code).toBe("INSTANCE_HAS_EIP");
      const held = (await records()).filter((e: { instance_id?: string }) => e.instance_id === target);
      expect(held).toHaveLength(1);
      await hostsAgree();
      expect(await bed.probe(held[0].public_ip, { timeoutMs: 2000 })).toBe(target);
      await releaseAll();
    }
  }, 120_000);
});
