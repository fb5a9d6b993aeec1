/**
 * A damaged store never starts and never crashes the daemon: the store file truncated, emptied,
 * removed, overwritten with random bytes, swapped for another directory's, or left unwritable is
 * refused at start with one line naming the file and what to do (exit 1). A store is created only
 * where none ever was; a store from before `store.id` is adopted; the structure check runs after
 * an unclean stop and is skipped after a clean one.
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  openSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { poolsToml } from "../support/config-toml.ts";
import { Daemon, daemonCommand, runToExit, tempDir } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";
import { seededRandom } from "../support/seeded-random.ts";

const POOL = poolsToml([{ name: "vms", cidr: "10.55.0.0/16" }]);
const PAGE = 4096;

const dirs: string[] = [];
const daemons: Daemon[] = [];
afterEach(async () => {
  for (const daemon of daemons.splice(0)) await daemon.dispose();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = tempDir("ippool-damage-test-");
  dirs.push(dir);
  return dir;
}

async function started(dir: string): Promise<Daemon> {
  const daemon = await Daemon.start({ dir, config: POOL });
  daemons.push(daemon);
  return daemon;
}

/** A data directory whose daemon allocated `count` addresses and stopped cleanly. */
async function storeWith(count: number, dir = scratch()): Promise<string> {
  const daemon = await started(dir);
  for (let i = 0; i < count; i += 100) {
    const batch = Array.from({ length: Math.min(100, count - i) }, (_, j) => `vm-${i + j}`);
    await Promise.all(batch.map((vm) => daemon.post("/api/v1/ip/allocate", { vm_id: vm })));
  }
  expect(await daemon.stop()).toBe(0);
  return dir;
}

/** A start on `dir` that must be refused: exit 1 and exactly one line on stderr. */
async function refusedStart(dir: string): Promise<string> {
  const run = await runToExit(["--config", join(dir, "ippool.toml")]);
  expect(run.code).toBe(1);
  const lines = run.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0] as string;
}

/** Overwrites pages `from`..end (or `count` of them) with bytes from a fixed seed. */
function overwritePages(file: string, from: number, count = Number.POSITIVE_INFINITY): void {
  const random = seededRandom(20261202);
  const pages = Math.min(count, Math.floor(statSync(file).size / PAGE) - from);
  const fd = openSync(file, "r+");
  try {
    for (let page = from; page < from + pages; page++) {
      const bytes = Buffer.from(Array.from({ length: PAGE }, () => Math.floor(random() * 256)));
      writeSync(fd, bytes, 0, PAGE, page * PAGE);
    }
  } finally {
    closeSync(fd);
  }
}

const store = (dir: string) => join(dir, "ippool.mdb");
const RESTORE = "restore a backup (README: Backup and restore)";

describe("a damaged store is refused at start, with one line", () => {
  test("truncated to 4 KiB: the check crashes in its child, the daemon refuses", async () => {
    const dir = await storeWith(300);
    truncateSync(store(dir), 4096);
    expect(await refusedStart(dir)).toMatch(
      new RegExp(
        `^ippool: error: ${store(dir)} is damaged: reading it crashed the check \\(SIG(SEGV|BUS)\\); ${RESTORE.replace(/[()]/g, "\\$&")}$`,
      ),
    );
  });

  test("truncated to 100 KB", async () => {
    const dir = await storeWith(3000);
    expect(statSync(store(dir)).size).toBeGreaterThan(100_000);
    truncateSync(store(dir), 100_000);
    expect(await refusedStart(dir)).toStartWith(`ippool: error: ${store(dir)} is damaged: `);
  });

  test("random bytes over its first pages (the meta pages)", async () => {
    const dir = await storeWith(300);
    overwritePages(store(dir), 0, 2);
    expect(await refusedStart(dir)).toStartWith(`ippool: error: ${store(dir)} is damaged: `);
  });

  test("random bytes over every page after the meta pages", async () => {
    const dir = await storeWith(3000);
    overwritePages(store(dir), 2);
    expect(await refusedStart(dir)).toStartWith(`ippool: error: ${store(dir)} is damaged: `);
  });

  test("emptied to 0 bytes: refused, not taken for a new store, and left as it is", async () => {
    const dir = await storeWith(10);
    truncateSync(store(dir), 0);
    expect(await refusedStart(dir)).toMatch(
      new RegExp(`^ippool: error: ${store(dir)} is empty \\(0 bytes\\) where store [0-9a-f-]{36} was: `),
    );
    expect(statSync(store(dir)).size).toBe(0);
  });

  test("removed: refused, and no new store is made", async () => {
    const dir = await storeWith(10);
    rmSync(store(dir));
    expect(await refusedStart(dir)).toMatch(
      new RegExp(`^ippool: error: ${store(dir)} is missing where store [0-9a-f-]{36} was: `),
    );
    expect(existsSync(store(dir))).toBe(false);
  });

  test("a 0-byte store file in a directory that never had a store is not taken for a new one", async () => {
    const dir = scratch();
    await storeWith(0, dir);
    rmSync(join(dir, "store.id"));
    truncateSync(store(dir), 0);
    expect(await refusedStart(dir)).toBe(
      `ippool: error: ${store(dir)} is empty (0 bytes) and ${dir} has no store.id: not a store ippool made; ${RESTORE}, or remove the file if this directory is new`,
    );
  });

  test("another directory's store file is refused, naming both stores", async () => {
    const mine = await storeWith(5);
    const theirs = await storeWith(5);
    copyFileSync(store(theirs), store(mine));
    expect(await refusedStart(mine)).toMatch(
      /^ippool: error: .*ippool\.mdb is store [0-9a-f-]{36}, not this directory's store [0-9a-f-]{36}: put back the right file, or remove store\.id to adopt this one on purpose$/,
    );
  });

  test("a store lock file the daemon's user cannot write is refused by name, not crashed on", async () => {
    const dir = await storeWith(5);
    const lock = `${store(dir)}-lock`;
    if (process.getuid?.() === 0) {
      // As `ippool fsck` run as root once left it: root's, 0644; the daemon runs as nobody.
      chmodSync(lock, 0o644);
      for (const name of ["", "ippool.mdb", "daemon.lock", "store.id", "ippool.toml"])
        chownSync(join(dir, name), 65534, 65534);
      chmodSync(dir, 0o755);
      const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
      const run = await sh([...asNobody, ...daemonCommand(), "--config", join(dir, "ippool.toml")], {
        allowFail: true,
      });
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(
        `ippool: error: ${lock} is not writable by this user (owner uid 0, mode 0644): give it to the daemon's user (chown), or remove it if it is ippool.mdb-lock and no daemon runs\n`,
      );
    } else {
      chmodSync(lock, 0o444);
      expect(await refusedStart(dir)).toStartWith(`ippool: error: ${lock} is not writable by this user (owner uid `);
    }
  });
});

describe("what starts", () => {
  test("after kill -9 the store is checked before serving, and every allocation is there", async () => {
    const dir = scratch();
    const first = await started(dir);
    await Promise.all(Array.from({ length: 50 }, (_, i) => first.post("/api/v1/ip/allocate", { vm_id: `vm-${i}` })));
    await first.kill9();
    const next = await started(dir);
    expect(next.logs).toMatch(/ INFO store checked file=\S+ippool\.mdb ms=\d+ entries=/);
    expect((await next.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(50);
  });

  test("after a clean stop the untouched store is not walked again", async () => {
    const dir = await storeWith(20);
    const next = await started(dir);
    expect(next.logs).not.toContain("store checked");
    expect((await next.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(20);
  });

  test("a store from before store.id is checked and adopted, its allocations kept", async () => {
    const dir = await storeWith(20);
    rmSync(join(dir, "store.id"));
    const next = await started(dir);
    expect(next.logs).toContain("store checked");
    expect(next.logs).toMatch(/ INFO store adopted: store\.id written store=[0-9a-f-]{36}/);
    expect((await next.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(20);
    expect(existsSync(join(dir, "store.id"))).toBe(true);
  });

  test("a backup restored into the directory starts: the same store, a new file", async () => {
    const dir = await storeWith(20);
    const copy = join(scratch(), "copy");
    expect((await runToExit(["backup", copy, "--config", join(dir, "ippool.toml")])).code).toBe(0);
    rmSync(store(dir));
    rmSync(`${store(dir)}-lock`);
    copyFileSync(join(copy, "ippool.mdb"), store(dir));
    const next = await started(dir);
    expect(next.logs).toContain("store checked");
    expect((await next.json("/api/v1/ip/stats?pool=vms")).body.allocated).toBe(20);
  });
});
