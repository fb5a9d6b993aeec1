/**
 * `ippool fsck` only reads: whatever state the data directory is in, it creates and changes no file
 * there (names, sizes, modes, times and contents are compared before and after), and it checks a
 * store on a read-only mount.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Daemon, daemonCommand, runToExit, tempDir } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function fresh(): string {
  const dir = tempDir();
  dirs.push(dir);
  return dir;
}

/** Every file of `dir` with what a write would change. */
function snapshot(dir: string): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const stat = statSync(path);
    const digest = stat.isFile() ? createHash("sha256").update(readFileSync(path)).digest("hex") : "dir";
    entries[name] = `${stat.size} ${stat.mode.toString(8)} ${stat.mtimeMs} ${digest}`;
  }
  return entries;
}

/** A data directory with allocations, left by a daemon that stopped. */
async function storeWithAllocations(): Promise<{ dir: string; config: string }> {
  const daemon = await Daemon.start({ dir: fresh() });
  for (const vm of ["vm-1", "vm-2", "vm-3"]) await daemon.post("/api/v1/ip/allocate", { vm_id: vm });
  expect(await daemon.stop()).toBe(0);
  return { dir: daemon.dir, config: daemon.configPath };
}

describe("ippool fsck only reads", () => {
  test("a mistyped data directory is reported, and nothing is created", async () => {
    const parent = fresh();
    const missing = join(parent, "typo");
    const result = await runToExit(["fsck", "--data-dir", missing]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`ippool: error: no store at ${missing}/ippool.mdb (ENOENT)\n`);
    expect(existsSync(missing)).toBe(false);
  });

  test("a 0-byte store file is reported as holding no store and stays 0 bytes", async () => {
    const dir = fresh();
    writeFileSync(join(dir, "ippool.mdb"), "");
    const before = snapshot(dir);
    const result = await runToExit(["fsck", "--data-dir", dir]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `ippool: error: ${dir}/ippool.mdb is empty (0 bytes): it holds no store; restore a backup\n`,
    );
    expect(snapshot(dir)).toEqual(before);
  });

  test("a stopped daemon's directory is checked and left exactly as it was", async () => {
    const { dir, config } = await storeWithAllocations();
    const before = snapshot(dir);
    expect(Object.keys(before)).toEqual(["daemon.lock", "ippool.mdb", "ippool.mdb-lock", "ippool.toml", "store.id"]);
    const result = await runToExit(["fsck", "--config", config]);
    expect(result.stdout).toContain("vms: 3 allocations, 0 problems");
    expect(result.code).toBe(0);
    expect(snapshot(dir)).toEqual(before);
  });

  test("a copy of the store file alone (no lock files) is checked and gets none", async () => {
    const { dir, config } = await storeWithAllocations();
    rmSync(join(dir, "daemon.lock"));
    rmSync(join(dir, "ippool.mdb-lock"));
    const before = snapshot(dir);
    const result = await runToExit(["fsck", "--config", config]);
    expect(result.stdout).toContain("vms: 3 allocations, 0 problems");
    expect(result.code).toBe(0);
    expect(snapshot(dir)).toEqual(before);
  });

  test("a store on a read-only mount is checked", async () => {
    const { dir, config } = await storeWithAllocations();
    const fsck = [...daemonCommand(), "fsck", "--config", config];
    // As root, modes do not stop writes: a read-only bind mount in a mount namespace of its own does.
    const result =
      process.getuid?.() === 0
        ? await sh(
            [
              "unshare",
              "--mount",
              "sh",
              "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
              dir,
              ...fsck,
            ],
            { allowFail: true },
          )
        : await readOnlyByModes(dir, () => sh(fsck, { allowFail: true }));
    expect(result.stderr).toBe("");
    expect(result.stdout).toContain("vms: 3 allocations, 0 problems");
    expect(result.code).toBe(0);
  });
});

async function readOnlyByModes<T>(dir: string, body: () => Promise<T>): Promise<T> {
  for (const name of readdirSync(dir)) chmodSync(join(dir, name), 0o444);
  chmodSync(dir, 0o555);
  try {
    return await body();
  } finally {
    chmodSync(dir, 0o755);
  }
}
