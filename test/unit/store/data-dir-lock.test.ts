/** What a start refusal says for each way the data directory's lock can fail (errno from flock/open). */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Runtime } from "../../../src/runtime/index.ts";
import { holdDataDirForReading, lockDataDir } from "../../../src/store/data-dir-lock.ts";
import { DataDirInUseError, DataDirLockError } from "../../../src/store/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "ippool-lock-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A runtime whose lock attempt ends with `errno` (0: taken). */
function runtimeAnswering(errno: number): Runtime {
  return { tryLock: () => errno } as unknown as Runtime;
}

function refusal(errno: number): Error {
  try {
    lockDataDir(runtimeAnswering(errno), dir);
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a refusal");
}

describe("lockDataDir", () => {
  test("a lock taken writes this process's pid into the lock file", () => {
    lockDataDir(runtimeAnswering(0), dir);
    expect(readFileSync(join(dir, "daemon.lock"), "utf8")).toBe(`${process.pid}\n`);
  });

  test("a lock held by a live daemon names the directory and the daemon's pid", () => {
    // This test process stands in for the live daemon whose pid the file holds.
    writeFileSync(join(dir, "daemon.lock"), `${process.pid}\n`);
    const error = refusal(11);
    expect(error).toBeInstanceOf(DataDirInUseError);
    expect(error.message).toBe(
      `data directory ${dir} is in use by another ippool daemon (pid ${process.pid}): stop it first, or give this one its own --data-dir`,
    );
  });

  test("a lock held while the pid in the file is gone is a reader's (fsck, backup)", async () => {
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    writeFileSync(join(dir, "daemon.lock"), `${gone.pid}\n`);
    expect(refusal(11).message).toBe(
      `data directory ${dir} is in use by another ippool process (an ippool fsck or backup reading it): stop it first, or give this one its own --data-dir`,
    );
    writeFileSync(join(dir, "daemon.lock"), "");
    expect(refusal(11).message).toStartWith(`data directory ${dir} is in use by another ippool process `);
  });

  test("a lock file the daemon may not open says who must be able to write it", () => {
    const error = refusal(13);
    expect(error).toBeInstanceOf(DataDirLockError);
    expect(error.message).toBe(
      `cannot open ${join(dir, "daemon.lock")} (permission denied): it must be writable by the daemon's user`,
    );
  });

  test("a read-only mount says the directory must be writable", () => {
    expect(refusal(30).message).toBe(
      `cannot open ${join(dir, "daemon.lock")} (read-only file system): the data directory must be writable`,
    );
  });

  test("a reader learns whether a daemon holds the directory", () => {
    const readerOf = (errno: number) => holdDataDirForReading(runtimeAnswering(errno), dir);
    expect(readerOf(0)).toBe("held");
    expect(readerOf(11)).toBe("daemon");
    expect(readerOf(2)).toBe("unlocked");
    expect(readerOf(13)).toBe("unlocked");
    expect(() => readerOf(5)).toThrow(DataDirLockError);
  });

  test("any other failure is refused with its errno", () => {
    expect(refusal(5).message).toBe(`cannot lock ${join(dir, "daemon.lock")} (errno 5)`);
  });
});
