/**
 * The data directory's file system fills up under the running daemon (a 4 MiB tmpfs, mounted in a
 * mount namespace of the daemon's own, so the machine's mounts are untouched; as root). Changes
 * answer 507 STORAGE_FULL, never 500; the daemon keeps serving reads and health and never exits;
 * nothing acknowledged is lost (fsck inside the namespace); the metric says so; and writes resume
 * by themselves once space is freed. A new store on a full file system is refused by name.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { configToml } from "../support/config-toml.ts";
import { Daemon, daemonCommand, tempDir } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";
import { parseExposition, sampleValue } from "../support/prometheus.ts";

const HOSTNAME = "h".repeat(1000);

const daemons: Daemon[] = [];
afterEach(async () => {
  for (const daemon of daemons.splice(0)) await daemon.dispose();
});

/** The daemon in a mount namespace whose `mnt` is a small tmpfs; `fill` KiB of it taken by a filler file. */
async function onSmallDisk(fillKiB: number): Promise<{ daemon: Daemon; mnt: string }> {
  const dir = tempDir("ippool-full-test-");
  const mnt = join(dir, "mnt");
  const config = configToml({
    server: { listen: "127.0.0.1:0", socket: join(dir, "ippool.sock"), dataDir: join(mnt, "data") },
    pools: [{ name: "vms", cidr: "10.66.0.0/16" }],
  });
  const mount = `mkdir -p "$0" && mount -t tmpfs -o size=4m tmpfs "$0" && dd if=/dev/zero of="$0/filler" bs=1k count=${fillKiB} status=none && exec "$@"`;
  const daemon = await Daemon.start({ dir, config, prefix: ["unshare", "--mount", "sh", "-c", mount, mnt] });
  daemons.push(daemon);
  return { daemon, mnt };
}

/** A command in the daemon's mount namespace (where the tmpfs is). */
function inDaemonMounts(daemon: Daemon, argv: readonly string[]) {
  return sh(["nsenter", "--mount", "--target", String(daemon.proc.pid), ...argv], { allowFail: true });
}

async function metric(daemon: Daemon, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sampleValue(parseExposition(await (await daemon.fetch("/metrics")).text()), name, labels);
}

describe("a full file system under the running daemon", () => {
  test("changes answer 507 and are not made, reads go on, nothing acknowledged is lost, writes resume", async () => {
    const { daemon, mnt } = await onSmallDisk(2048);
    const acknowledged: string[] = [];
    const refused: { status: number; code: string; error: string }[] = [];
    // Batches of 25 at once (they share commits, as under load) until 20 have been refused.
    for (let batch = 0; refused.length < 20 && batch < 1000; batch++) {
      const ids = Array.from({ length: 25 }, (_, j) => `vm-${batch * 25 + j}`);
      const answers = await Promise.all(
        ids.map((vm) => daemon.post("/api/v1/ip/allocate", { vm_id: vm, hostname: HOSTNAME })),
      );
      answers.forEach(({ status, body }, j) => {
        if (status === 201) acknowledged.push(ids[j] as string);
        else refused.push({ status, code: body.code, error: body.error });
      });
    }
    const storageFull = refused.length;
    console.log(`storage full: ${acknowledged.length} allocations acknowledged, ${storageFull} refused`);
    expect(acknowledged.length).toBeGreaterThan(100);
    expect(refused).toEqual(
      Array.from({ length: storageFull }, () => ({
        status: 507,
        code: "STORAGE_FULL",
        error: expect.stringMatching(
          /^the data directory's file system is full \(\d+ bytes free\): the change was not made;/,
        ),
      })),
    );
    expect(daemon.proc.exitCode).toBeNull();

    // Reads and health still answer, and every acknowledged allocation is there.
    expect((await daemon.json("/api/v1/health")).status).toBe(200);
    const listed = new Set(
      ((await daemon.json("/api/v1/ip/allocations")).body as { vm_id: string }[]).map((a) => a.vm_id),
    );
    expect(acknowledged.filter((vm) => !listed.has(vm))).toEqual([]);
    expect(listed.size).toBe(acknowledged.length);
    expect(await metric(daemon, "ippool_store_full")).toBe(1);
    // One refused commit may carry several requests (group commit): at least one, at most each.
    const counted = await metric(daemon, "ippool_store_write_failures_total", { reason: "storage_full" });
    expect(counted).toBeGreaterThanOrEqual(1);
    expect(counted).toBeLessThanOrEqual(storageFull);

    // The store on disk holds exactly what was acknowledged (fsck beside the daemon, read-only).
    const fsck = await inDaemonMounts(daemon, [...daemonCommand(), "fsck", "--config", daemon.configPath]);
    expect(fsck.stdout).toContain(`vms: ${acknowledged.length} allocations, 0 problems`);
    expect(fsck.code).toBe(0);

    // Space comes back: the next change is written, with no restart.
    expect((await inDaemonMounts(daemon, ["rm", join(mnt, "filler")])).code).toBe(0);
    const resumed = await daemon.post("/api/v1/ip/allocate", { vm_id: "after-space-returned" });
    expect(resumed.status).toBe(201);
    expect(await metric(daemon, "ippool_store_full")).toBe(0);
    expect((await daemon.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(acknowledged.length + 1);
    expect(await daemon.stop()).toBe(0);
  });

  test("a new store on a file system without room is refused by name, not crashed on", async () => {
    const dir = tempDir("ippool-full-test-");
    const mnt = join(dir, "mnt");
    const config = join(dir, "ippool.toml");
    await Bun.write(
      config,
      configToml({
        server: { listen: "127.0.0.1:0", socket: "", dataDir: join(mnt, "data") },
        pools: [{ name: "vms", cidr: "10.66.0.0/16" }],
      }),
    );
    const mount = `mkdir -p "$0" && mount -t tmpfs -o size=4m tmpfs "$0" && dd if=/dev/zero of="$0/filler" bs=1k count=3500 status=none && exec "$@"`;
    const run = await sh(["unshare", "--mount", "sh", "-c", mount, mnt, ...daemonCommand(), "--config", config], {
      allowFail: true,
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      new RegExp(
        `^ippool: error: cannot create a store in ${mnt}/data: its file system has \\d+ bytes free \\(at least 1048576 needed\\)\\n$`,
      ),
    );
    await sh(["rm", "-rf", dir]);
  });
});
