/**
 * Elastic IPs end to end: the compiled daemon runs in the testbed's daemon namespace, reaches
 * real OpenSSH servers on the hypervisor hosts, checks instances with libvirt's test driver, and
 * its NAT rules carry real traffic from the uplink to the VMs. The test talks to the daemon
 * over its Unix socket (the filesystem is shared across namespaces), as an administrator naming
 * the project, or with the project's API key.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configToml } from "../support/config-toml.ts";
import { Daemon } from "../support/daemon.ts";
import { eventually } from "../support/processes.ts";
import { parseExposition, promtool, samplesOf, sampleValue } from "../support/prometheus.ts";
import { Testbed } from "../support/testbed.ts";

const KEY = "acme-api-key";
let bed: Testbed;
let daemon: Daemon;

function config(): string {
  const hosts = bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 3000 });
  return configToml({
    reconcileIntervalS: 1,
    pools: [{ name: "vms", cidr: "192.168.100.0/24", gateway: "192.168.100.1" }],
    eipPools: { public: bed.eipCidr },
    projects: [
      { name: "acme", apiKey: KEY, quota: 10 },
      { name: "globex", apiKey: "globex" },
    ],
    // hv3's public interface does not exist: every NAT change there fails on the host.
    hosts: hosts.map((host) => (host.name === "hv3" ? { ...host, publicInterface: "nosuch0" } : host)),
  });
}

beforeAll(async () => {
  bed = await Testbed.create({
    hosts: [
      { name: "hv1", vms: [{ name: "web-1" }, { name: "web-3", state: "paused" }] },
      { name: "hv2", vms: [{ name: "web-2" }, { name: "web-4" }] },
      { name: "hv3", vms: [{ name: "web-5" }] },
    ],
  });
  daemon = await Daemon.start({ config: config(), prefix: bed.daemonNetnsPrefix() });
  // The daemon answers before its SSH connections are up; wait for all three.
  const connected = async () => bed.hosts.every((h) => daemon.logs.includes(`host connected host=${h.name}`));
  expect(await eventually(connected, 10_000)).toBe(true);
  // What the libvirt hook does at VM start: record each VM's address and host.
  for (const host of bed.hosts) {
    for (const vm of host.vms) {
      const { status } = await daemon.post(
        "/api/v1/ip/allocate",
        { vm_id: vm.name, ip: vm.privateIp, host: host.name },
        "unix",
      );
      expect(status).toBe(201);
    }
  }
}, 60_000);

afterAll(async () => {
  if (process.env.SHOW_DAEMON_LOGS) console.log(daemon?.logs);
  await daemon?.dispose();
  await bed?.destroy();
});

function eipCall(method: string, path: string, body?: unknown, project = "acme") {
  return daemon.json(path, {
    method,
    via: "unix",
    headers: { "content-type": "application/json", "x-project": project },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}
const allocate = async () => (await eipCall("POST", "/elastic-ips")).body;
const associate = (id: string, instance_id: string, allow_reassociation?: boolean) =>
  eipCall("POST", `/elastic-ips/${id}/associate`, {
    instance_id,
    ...(allow_reassociation ? { allow_reassociation } : {}),
  });
const disassociate = (id: string) => eipCall("POST", `/elastic-ips/${id}/disassociate`);

async function ruleCount(host: string, eip: string): Promise<number> {
  const { stdout } = await bed.hostExec(host, ["nft", "list", "map", "ip", "ippool", "eip_dnat"]);
  return stdout.includes(`${eip} :`) ? 1 : 0;
}

describe("the lifecycle", () => {
  test("associate carries traffic to the VM and out as the EIP; disassociate stops it; release frees it", async () => {
    const eip = await allocate();
    const { status, body } = await associate(eip.id, "web-1");
    expect(status).toBe(200);
    expect(body).toMatchObject({
      id: eip.id,
      public_ip: eip.public_ip,
      instance_id: "web-1",
      host: "hv1",
      private_ip: bed.vm("web-1").privateIp,
      state: "associated",
    });
    expect(Date.parse(body.associated_at)).toBeGreaterThan(0);
    expect(await bed.probe(eip.public_ip, { timeoutMs: 2000 })).toBe("web-1");
    expect(await bed.snatSource("web-1")).toBe(eip.public_ip);
    const listed = await eipCall("GET", "/elastic-ips?instance_id=web-1&state=associated");
    expect(listed.body.map((e: { id: string }) => e.id)).toEqual([eip.id]);
    expect((await eipCall("GET", "/elastic-ips?instance_id=web-2")).body).toEqual([]);
    expect((await eipCall("DELETE", `/elastic-ips/${eip.id}`)).body.code).toBe("STILL_ASSOCIATED");

    const back = await disassociate(eip.id);
    expect(back.status).toBe(200);
    expect(back.body.state).toBe("allocated");
    expect(back.body.instance_id).toBeUndefined();
    expect(await bed.probe(eip.public_ip, { timeoutMs: 300 })).toBeNull();
    expect(await bed.hostAddresses("hv1")).not.toContain(eip.public_ip);
    expect((await eipCall("DELETE", `/elastic-ips/${eip.id}`)).status).toBe(200);
  });

  test("the project's API key works on the socket too, and another project cannot touch the EIP", async () => {
    const eip = await allocate();
    const foreign = await eipCall("POST", `/elastic-ips/${eip.id}/associate`, { instance_id: "web-1" }, "globex");
    expect(foreign.status).toBe(404);
    const withKey = await daemon.json(`/elastic-ips/${eip.id}`, { via: "unix", headers: { "x-api-key": KEY } });
    expect(withKey.body.id).toBe(eip.id);
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  });
});

describe("refusals", () => {
  test.each([
    ["an instance no host has", "nosuch-vm", 404, "INSTANCE_NOT_FOUND"],
    ["a paused instance", "web-3", 409, "INSTANCE_NOT_RUNNING"],
    ["a malformed instance id", "bad id!", 422, "VALIDATION"],
  ])("%s answers %i %s and changes nothing", async (_what, instance, status, code) => {
    const eip = await allocate();
    const response = await associate(eip.id, instance);
    expect(response.status).toBe(status);
    expect(response.body.code).toBe(code);
    expect((await eipCall("GET", `/elastic-ips/${eip.id}`)).body.state).toBe("allocated");
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  });

  test("an instance with an EIP, and an EIP associated elsewhere, answer 409", async () => {
    const first = await allocate();
    const second = await allocate();
    await associate(first.id, "web-4");
    expect((await associate(second.id, "web-4")).body.code).toBe("INSTANCE_HAS_EIP");
    expect((await associate(first.id, "web-1")).body.code).toBe("ALREADY_ASSOCIATED");
    await disassociate(first.id);
    for (const eip of [first, second]) await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  });

  test("a command failing on the target host answers 502 HOST_COMMAND_FAILED, state unchanged", async () => {
    const eip = await allocate();
    const response = await associate(eip.id, "web-5");
    expect(response.status).toBe(502);
    expect(response.body.code).toBe("HOST_COMMAND_FAILED");
    expect((await eipCall("GET", `/elastic-ips/${eip.id}`)).body.state).toBe("allocated");
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  });

  test("an unreachable target host answers 502 HOST_UNAVAILABLE, state unchanged; it works once the host is back", async () => {
    const eip = await allocate();
    await bed.stopSshd("hv2");
    try {
      const response = await associate(eip.id, "web-2");
      expect(response.status).toBe(502);
      expect(response.body.code).toBe("HOST_UNAVAILABLE");
      expect((await eipCall("GET", `/elastic-ips/${eip.id}`)).body.state).toBe("allocated");
    } finally {
      await bed.startSshd("hv2");
    }
    // The daemon reconnects by itself (with backoff).
    expect(await eventually(async () => (await associate(eip.id, "web-2")).status === 200, 20_000)).toBe(true);
    await disassociate(eip.id);
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  }, 30_000);
});

describe("moving an EIP", () => {
  test("with the old host reachable: traffic reaches the new VM and the old host is cleaned", async () => {
    const eip = await allocate();
    await associate(eip.id, "web-1");
    expect(await bed.probe(eip.public_ip, { timeoutMs: 2000 })).toBe("web-1");
    const moved = await associate(eip.id, "web-2", true);
    expect(moved.body).toMatchObject({ host: "hv2", instance_id: "web-2" });
    await bed.probeUntil(eip.public_ip, "web-2", 5000);
    expect(await eventually(async () => (await ruleCount("hv1", eip.public_ip)) === 0, 3000)).toBe(true);
    await disassociate(eip.id);
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  }, 20_000);

  test("with the old host down: the move succeeds, and when the host returns its stale rules are removed", async () => {
    const eip = await allocate();
    await associate(eip.id, "web-1");
    await bed.hostDown("hv1");
    try {
      const moved = await associate(eip.id, "web-2", true);
      expect(moved.status).toBe(200);
      expect(moved.body.host).toBe("hv2");
      await bed.probeUntil(eip.public_ip, "web-2", 5000);
      expect(await ruleCount("hv1", eip.public_ip)).toBe(1);
    } finally {
      await bed.hostUp("hv1");
    }
    const cleaned = async () =>
      (await ruleCount("hv1", eip.public_ip)) === 0 && !(await bed.hostAddresses("hv1")).includes(eip.public_ip);
    expect(await eventually(cleaned, 20_000)).toBe(true);
    expect(await bed.probe(eip.public_ip, { timeoutMs: 1000 })).toBe("web-2");
    await disassociate(eip.id);
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  }, 40_000);
});

describe("reconciliation", () => {
  test("a host that lost its rules (a reboot) gets them back", async () => {
    const eip = await allocate();
    await associate(eip.id, "web-2");
    const before = daemon.logs.length;
    await bed.flushHost("hv2");
    expect(await eventually(async () => (await bed.probe(eip.public_ip, { timeoutMs: 200 })) === "web-2", 10_000)).toBe(
      true,
    );
    // Put back by a reconciliation run (every second here), which logs the drift it corrected.
    const logged = async () => /reconciled host host=hv2 added=1/.test(daemon.logs.slice(before));
    expect(await eventually(logged, 5000)).toBe(true);
    await disassociate(eip.id);
    await eipCall("DELETE", `/elastic-ips/${eip.id}`);
  }, 20_000);

  test("rules ippool does not own survive reconciliation", async () => {
    await bed.hostExec("hv2", ["nft", "add", "table", "ip", "operator"]);
    await bed.hostExec("hv2", ["nft", "add", "chain", "ip", "operator", "keep"]);
    await Bun.sleep(1500);
    const { stdout } = await bed.hostExec("hv2", ["nft", "list", "table", "ip", "operator"]);
    expect(stdout).toContain("chain keep");
  });
});

test("metrics over the socket: hosts up, command latency by program, associations and reconciliation; promtool passes", async () => {
  const scrape = async () => {
    const response = await daemon.fetch("/metrics", { via: "unix" });
    expect(response.status).toBe(200);
    return response.text();
  };
  // Hosts taken down by earlier tests reconnect with backoff.
  const up = async () => {
    const samples = parseExposition(await scrape());
    return ["hv1", "hv2"].every((host) => sampleValue(samples, "ippool_host_up", { host }) === 1);
  };
  expect(await eventually(up, 30_000)).toBe(true);
  const text = await scrape();
  const samples = parseExposition(text);
  expect(sampleValue(samples, "ippool_host_up", { host: "hv1" })).toBe(1);
  const associated = sampleValue(samples, "ippool_eip_association_duration_seconds_count", { operation: "associate" });
  expect(associated).toBeGreaterThan(0);
  expect(
    sampleValue(samples, "ippool_eip_association_duration_seconds_count", { operation: "disassociate" }),
  ).toBeGreaterThan(0);
  // hv3's public interface does not exist: its association failed on the host.
  expect(
    sampleValue(samples, "ippool_eip_association_failures_total", {
      operation: "associate",
      code: "HOST_COMMAND_FAILED",
    }),
  ).toBeGreaterThan(0);
  // Reconciliation runs every second here; hv2 had its rules flushed and got one back.
  expect(sampleValue(samples, "ippool_reconciliation_duration_seconds_count", { host: "hv1" })).toBeGreaterThan(0);
  expect(
    sampleValue(samples, "ippool_reconciliation_corrections_total", { host: "hv2", kind: "added" }),
  ).toBeGreaterThan(0);
  expect(samplesOf(samples, "ippool_reconciliation_failures_total")).toHaveLength(3);
  // Commands are labelled by program only.
  const commands = new Set(
    samplesOf(samples, "ippool_host_command_duration_seconds_count").map((s) => s.labels.command as string),
  );
  expect(commands.has("nft")).toBe(true);
  expect(commands.has("virsh")).toBe(true);
  for (const command of commands) expect(["nft", "ip", "virsh", "conntrack", "arping"]).toContain(command);
  const { code, output } = await promtool(["check", "metrics"], text);
  expect(output).toBe("");
  expect(code).toBe(0);
}, 40_000);
