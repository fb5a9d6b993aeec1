/**
 * One daemon per data directory: the daemon holds an exclusive flock(2) on `<data_dir>/daemon.lock`
 * for its whole life. The kernel drops it when the process ends, however it ends (kill -9
 * included), so a stale lock never blocks a restart; a second daemon finds it held and refuses
 * to start before it touches the store. The file holds the daemon's pid, for messages only.
 * Readers (`ippool fsck`, an offline `ippool backup`) take it shared, so that no daemon starts
 * writing under them, and learn from it whether a daemon runs.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Runtime } from "../runtime/index.ts";
import { DataDirInUseError, DataDirLockError } from "./errors.ts";

export const LOCK_FILE = "daemon.lock";

const ENOENT = 2;
const EWOULDBLOCK = 11;
const EACCES = 13;
const EROFS = 30;

export function lockDataDir(runtime: Runtime, dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const path = join(dataDir, LOCK_FILE);
  const errno = runtime.tryLock(path, "exclusive");
  if (errno === EWOULDBLOCK) {
    throw new DataDirInUseError(
      `data directory ${dataDir} is in use by ${holderOf(path)}: stop it first, or give this one its own --data-dir`,
    );
  }
  if (errno === EACCES) {
    throw new DataDirLockError(`cannot open ${path} (permission denied): it must be writable by the daemon's user`);
  }
  if (errno === EROFS) {
    throw new DataDirLockError(`cannot open ${path} (read-only file system): the data directory must be writable`);
  }
  if (errno !== 0) throw new DataDirLockError(`cannot lock ${path} (errno ${errno})`);
  try {
    writeFileSync(path, `${process.pid}\n`);
  } catch (error) {
    // The pid is for messages only; a full file system must not stop a daemon that can serve reads.
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
  }
}

/**
 * For a reader: "daemon" when a daemon holds the directory (read beside it), "held" when this
 * process now holds it shared (no daemon can start until it exits), "unlocked" when there is no
 * lock file to hold (none was ever made, or it may not be opened: a copy, a read-only mount).
 */
export function holdDataDirForReading(runtime: Runtime, dataDir: string): "daemon" | "held" | "unlocked" {
  const errno = runtime.tryLock(join(dataDir, LOCK_FILE), "shared");
  if (errno === 0) return "held";
  if (errno === EWOULDBLOCK) return "daemon";
  if (errno === ENOENT || errno === EACCES) return "unlocked";
  throw new DataDirLockError(`cannot lock ${join(dataDir, LOCK_FILE)} for reading (errno ${errno})`);
}

/** Who holds the lock, as well as the file tells: a live daemon by pid, else a reader. */
function holderOf(path: string): string {
  const pid = pidIn(path);
  if (pid !== null && isAlive(pid)) return `another ippool daemon (pid ${pid})`;
  return "another ippool process (an ippool fsck or backup reading it)";
}

function pidIn(path: string): number | null {
  try {
    const text = readFileSync(path, "utf8").trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
