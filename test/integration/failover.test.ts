/**
 * Fleet mode through a failover of its database: a primary with a synchronous standby, the
 * daemon given both in one URL (`target_session_attrs=primary`). The primary is killed (`kill -9`
 * of its every process) in the middle of a load of allocations and the standby promoted: writes
 * resume by themselves, every allocation a client was answered 201 for is there, and no address
 * is held twice. Printed: the time from the kill to the promotion's end, and to the first answer
 * to a request sent after the kill.
 *
 * The standby is made synchronous only after its copy was taken: promoted, it must not wait for
 * a standby of its own (test/support/postgres-pair.ts). An operator's promotion (Patroni's) does
 * the same.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit } from "../support/daemon.ts";
import { type PostgresPair, startPostgresPair } from "../support/postgres-pair.ts";

let pair: PostgresPair;
beforeAll(async () => {
  pair = await startPostgresPair();
  const migrated = await runToExit(["db", "migrate", "--database-url", pair.primaryUrl]);
  expect(migrated.code).toBe(0);
});
afterAll(async () => {
  await pair.stop();
});

test("kill -9 of the primary mid-load, then the standby's promotion: writes resume, nothing acknowledged is lost, no address twice", async () => {
  const config = `${poolsToml([{ name: "vms", cidr: "10.40.0.0/20" }])}\n[store]\nbackend = "postgres"\nurl = "${pair.url}"\ndaemon = "hv1"\n`;
  const daemon = await Daemon.start({ config });
  try {
    const acknowledged = new Map<string, string>();
    let killedAt = 0;
    let resumedAt = 0;
    let refused = 0;
    let stopping = false;
    const load = Array.from({ length: 8 }, async (_, worker) => {
      for (let i = 0; !stopping; i++) {
        const vmId = `fo-${worker}-${i}`;
        const sentAt = Date.now();
        const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: vmId });
        if (status === 201) {
          acknowledged.set(vmId, body.ip);
          // The first answer to a request sent after the kill: the new primary took its commit.
          if (killedAt > 0 && sentAt > killedAt && resumedAt === 0) resumedAt = Date.now();
        } else {
          expect([status, body.code]).toEqual([503, "STORE_UNAVAILABLE"]);
          refused++;
          await Bun.sleep(20);
        }
      }
    });
    await Bun.sleep(500);
    const before = acknowledged.size;
    // Counted from the moment every process of the primary is dead: a request sent while the
    // kill was under way could still be answered by the old primary (one CI run printed 23 ms).
    await pair.killPrimary();
    killedAt = Date.now();
    await pair.promoteStandby();
    const promotedAt = Date.now();
    const deadline = Date.now() + 30_000;
    while (resumedAt === 0 && Date.now() < deadline) await Bun.sleep(20);
    await Bun.sleep(500);
    stopping = true;
    await Promise.all(load);
    console.log(
      `failover: ${before} allocations acknowledged before the kill, ${acknowledged.size} in all, ${refused} answered 503; ` +
        `writes resumed ${resumedAt - killedAt} ms after the kill (the promotion call returned after ${promotedAt - killedAt} ms)`,
    );
    expect(resumedAt).toBeGreaterThan(0);
    expect(acknowledged.size).toBeGreaterThan(before);
    const listed = (await daemon.json("/api/v1/ip/allocations?pool=vms")).body as { vm_id: string; ip: string }[];
    const held = new Map(listed.map((allocation) => [allocation.vm_id, allocation.ip]));
    for (const [vmId, ip] of acknowledged) expect([vmId, held.get(vmId)]).toEqual([vmId, ip]);
    expect(new Set(listed.map((allocation) => allocation.ip)).size).toBe(listed.length);
    const fsck = await runToExit(["fsck", "--config", daemon.configPath]);
    expect([fsck.code, fsck.stderr]).toEqual([0, ""]);
  } finally {
    await daemon.dispose();
  }
});
