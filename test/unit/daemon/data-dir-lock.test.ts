/** What a start refusal says for each way the data directory's lock can fail (errno from flock/open). */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lockDataDir } from "../../../src/daemon/data-dir-lock.ts";
import { DataDirInUseError, DataDirLockError } from "../../../src/daemon/errors.ts";
import type { Runtime } from "../../../src/runtime/index.ts";

const dir = mkdtempSync(join(tmpdir(), "ippool-lock-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A runtime whose lock attempt ends with `errno` (0: taken). */
function runtimeAnswering(errno: number): Runtime {
  return { tryLockExclusive: () => errno } as unknown as Runtime;
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

  test("a lock held elsewhere names the directory and the holder's pid", () => {
    writeFileSync(join(dir, "daemon.lock"), "4242\n");
    const error = refusal(11);
    expect(error).toBeInstanceOf(DataDirInUseError);
    expect(error.message).toBe(
      `data directory ${dir} is in use by another ippool daemon (pid 4242): stop it first, or give this one its own --data-dir`,
    );
  });

  test("a holder that wrote no pid yet is named without one", () => {
    writeFileSync(join(dir, "daemon.lock"), "");
    expect(refusal(11).message).toStartWith(`data directory ${dir} is in use by another ippool daemon: `);
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

  test("any other failure is refused with its errno", () => {
    expect(refusal(5).message).toBe(`cannot lock ${join(dir, "daemon.lock")} (errno 5)`);
  });
});
