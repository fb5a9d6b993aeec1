/**
 * `ippool backup DEST`: a consistent copy of the store, taken offline or beside a daemon under
 * write load; fsck accepts every copy and a daemon starts from it with every allocation that was
 * acknowledged before the backup began.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, runToExit, tempDir } from "../support/daemon.ts";

const POOL = poolsToml([{ name: "vms", cidr: "10.44.0.0/16" }]);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function daemonOn(dir: string): Promise<Daemon> {
  const daemon = await Daemon.start({ dir, config: POOL });
  cleanups.push(() => daemon.dispose());
  return daemon;
}

function scratch(): string {
  const dir = tempDir("ippool-backup-test-");
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function vmIdsOf(daemon: Daemon): Promise<Set<string>> {
  const { body } = await daemon.json("/api/v1/ip/allocations");
  return new Set((body as { vm_id: string }[]).map((allocation) => allocation.vm_id));
}

/** fsck of `dest` with the source's config: exit code and its summary line for the pool. */
async function fsckOf(source: Daemon, dest: string) {
  const run = await runToExit(["fsck", "--config", source.configPath, "--data-dir", dest]);
  return { code: run.code, summary: /^vms: .*$/m.exec(run.stdout)?.[0], stderr: run.stderr };
}

describe("ippool backup", () => {
  test("offline: the copy passes fsck and a daemon starts from it; the source is not touched", async () => {
    const source = await daemonOn(scratch());
    for (const vm of ["vm-1", "vm-2", "vm-3"]) await source.post("/api/v1/ip/allocate", { vm_id: vm });
    expect(await source.stop()).toBe(0);
    const before = readdirSync(source.dir).sort();
    const dest = join(scratch(), "copy");
    const run = await runToExit(["backup", dest, "--config", source.configPath]);
    expect(run.stderr).toBe("");
    expect(run.stdout).toMatch(new RegExp(`^backup: ${dest}/ippool.mdb, \\d+ bytes, \\d+ ms\\n$`));
    expect(run.code).toBe(0);
    expect(readdirSync(source.dir).sort()).toEqual(before);
    expect(await fsckOf(source, dest)).toEqual({ code: 0, summary: "vms: 3 allocations, 0 problems", stderr: "" });
    const restored = await daemonOn(dest);
    expect(await vmIdsOf(restored)).toEqual(new Set(["vm-1", "vm-2", "vm-3"]));
    expect((await restored.json("/api/v1/ip/vm-2")).body.ip).toBe("10.44.0.3");
  });

  test("under write load every backup is fsck-clean and holds every allocation acknowledged before it began", async () => {
    const source = await daemonOn(scratch());
    const acknowledged: string[] = [];
    let writing = true;
    let waiting: { count: number; resolve: () => void } | null = null;
    /** Resolves once `count` allocations have been acknowledged. */
    const acknowledgedUpTo = (count: number) =>
      new Promise<void>((resolve) => {
        waiting = { count, resolve };
      });
    const writer = async (loop: number) => {
      for (let i = 0; writing; i++) {
        const vm = `load-${loop}-${i}`;
        const { status } = await source.post("/api/v1/ip/allocate", { vm_id: vm });
        if (status !== 201) throw new Error(`allocate ${vm}: ${status}`);
        acknowledged.push(vm);
        if (waiting && acknowledged.length >= waiting.count) waiting.resolve();
      }
    };
    const writers = Promise.all([0, 1, 2, 3].map(writer));
    const backups: { dest: string; before: string[] }[] = [];
    const root = scratch();
    for (let k = 0; k < 5; k++) {
      // 50 more writes first, so that each backup is taken with writes still coming.
      await acknowledgedUpTo(acknowledged.length + 50);
      const dest = join(root, `backup-${k}`);
      const before = [...acknowledged];
      const run = await runToExit(["backup", dest, "--config", source.configPath]);
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      backups.push({ dest, before });
    }
    writing = false;
    await writers;
    for (const { dest, before } of backups) {
      const check = await fsckOf(source, dest);
      expect(check.code).toBe(0);
      expect(check.summary).toMatch(/^vms: \d+ allocations, 0 problems$/);
      const restored = await daemonOn(dest);
      const held = await vmIdsOf(restored);
      expect(before.filter((vm) => !held.has(vm))).toEqual([]);
      await restored.stop();
    }
    console.log(
      `backup under load: ${backups.length} backups, acknowledged before each: ${backups.map((b) => b.before.length).join(", ")}`,
    );
  });

  test("a destination that is not empty is refused and nothing is written to it", async () => {
    const source = await daemonOn(scratch());
    const dest = scratch();
    writeFileSync(join(dest, "keep.txt"), "mine");
    const run = await runToExit(["backup", dest, "--config", source.configPath]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`ippool: error: backup: ${dest} is not empty; name a new or empty directory\n`);
    expect(readdirSync(dest)).toEqual(["keep.txt"]);
  });

  test("the data directory itself is refused as destination", async () => {
    const source = await daemonOn(scratch());
    const run = await runToExit(["backup", source.dir, "--config", source.configPath]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `ippool: error: backup: ${source.dir} is the data directory itself; name a new directory\n`,
    );
  });

  test("an empty destination directory is used", async () => {
    const source = await daemonOn(scratch());
    const dest = join(scratch(), "empty");
    mkdirSync(dest);
    const run = await runToExit(["backup", dest, "--config", source.configPath]);
    expect(run.code).toBe(0);
    expect(readdirSync(dest)).toEqual(["ippool.mdb"]);
  });
});
