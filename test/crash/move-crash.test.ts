/**
 * A kill -9 in the middle of a move, replayed exactly: the new host got the association and
 * announced it (gratuitous ARP), but the record still names the old host. After the restart,
 * reconciliation takes the association back off the new host. The outside world learned the new
 * host's MAC for the EIP, so unless the EIP is announced again from the host the records name, its
 * traffic goes to a host that no longer has it until the neighbour entry expires (the crash loop
 * saw 8 s). Runs as root on the namespace testbed.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { nftTransaction } from "../../src/hosts/nft.ts";
import { type Daemon, tempDir } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";
import { Testbed } from "../support/testbed.ts";
import { associationCounts, HostedAssociations, TESTBED } from "./associations.ts";
import { startInTestbed } from "./crash-loop.ts";
import { disagreements } from "./host-state.ts";

let bed: Testbed;
let hosted: HostedAssociations;
let daemon: Daemon | undefined;
const dir = tempDir("ippool-move-crash-");

beforeAll(async () => {
  bed = await Testbed.create(TESTBED);
  hosted = new HostedAssociations(bed, associationCounts());
}, 60_000);

afterAll(async () => {
  await daemon?.dispose();
  await bed?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** The MAC the uplink (the outside world) would send the address's traffic to, or null. */
async function uplinkNeighbour(address: string): Promise<string | null> {
  const { stdout } = await sh(["ip", "-n", bed.namespaces.uplink, "neigh", "show", address]);
  return /lladdr (\S+)/.exec(stdout)?.[1] ?? null;
}

async function macOf(host: string): Promise<string> {
  const { stdout } = await sh(["ip", "-n", bed.host(host).namespace, "-j", "link", "show", "eth0"]);
  return (JSON.parse(stdout) as { address: string }[])[0]?.address ?? "";
}

/** Polls without sending the address any traffic (which would make the uplink resolve it afresh). */
async function neighbourBecomes(address: string, mac: string, timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  let seen = await uplinkNeighbour(address);
  while (seen !== mac && Date.now() < deadline) {
    await Bun.sleep(100);
    seen = await uplinkNeighbour(address);
  }
  return seen;
}

function call(d: Daemon, method: string, path: string, body?: unknown) {
  return d.json(path, {
    method,
    via: "unix",
    headers: { "content-type": "application/json", "x-project": "crash" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

test("after a kill -9 mid-move, the EIP is announced again from the host its record names", async () => {
  daemon = await startInTestbed(hosted, dir);
  await hosted.registerGuests(daemon);
  const eip = (await call(daemon, "POST", "/elastic-ips")).body;
  const associated = await call(daemon, "POST", `/elastic-ips/${eip.id}/associate`, { instance_id: "guest-21" });
  expect(associated.body).toMatchObject({ host: "hv2", state: "associated" });
  const [hv1, hv2] = [await macOf("hv1"), await macOf("hv2")];
  expect(await neighbourBecomes(eip.public_ip, hv2, 5000)).toBe(hv2);

  // The move to guest-11 on hv1 got as far as the host (and its announcement), then the kill.
  await daemon.kill9();
  const move = nftTransaction(
    {
      dnatDelete: [],
      snatDelete: [],
      dnatAdd: [{ eip: eip.public_ip, privateIp: bed.vm("guest-11").privateIp }],
      snatAdd: [{ eip: eip.public_ip, privateIp: bed.vm("guest-11").privateIp }],
    },
    true,
  );
  expect((await bed.hostExec("hv1", ["nft", "-f", "-"], { stdin: move })).code).toBe(0);
  expect((await bed.hostExec("hv1", ["ip", "addr", "add", `${eip.public_ip}/32`, "dev", "eth0"])).code).toBe(0);
  expect((await bed.hostExec("hv1", ["arping", "-c", "1", "-U", "-I", "eth0", eip.public_ip])).code).toBe(0);
  expect(await neighbourBecomes(eip.public_ip, hv1, 5000)).toBe(hv1);

  // The restart reconciles: hv1 loses the unrecorded association, and hv2 announces the EIP again.
  daemon = await startInTestbed(hosted, dir);
  expect(await disagreements(bed, (await call(daemon, "GET", "/elastic-ips")).body)).toEqual([]);
  expect(await neighbourBecomes(eip.public_ip, hv2, 10_000)).toBe(hv2);
  expect(await bed.probe(eip.public_ip, { timeoutMs: 2000 })).toBe("guest-21");
}, 60_000);
