/**
 * One daemon per data directory: the daemon holds an exclusive flock(2) on `<data_dir>/daemon.lock`
 * for its whole life. The kernel drops it when the process ends, however it ends (kill -9
 * included), so a stale lock never blocks a restart; a second daemon finds it held and refuses
 * to start before it touches the store. The file holds the holder's pid, for the message only.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Runtime } from "../runtime/index.ts";
import { DataDirInUseError, DataDirLockError } from "./errors.ts";

export const LOCK_FILE = "daemon.lock";

const EWOULDBLOCK = 11;
const EACCES = 13;
const EROFS = 30;

export function lockDataDir(runtime: Runtime, dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const path = join(dataDir, LOCK_FILE);
  const errno = runtime.tryLockExclusive(path);
  if (errno === EWOULDBLOCK) {
    throw new DataDirInUseError(
      `data directory ${dataDir} is in use by another ippool daemon${holderOf(path)}: stop it first, or give this one its own --data-dir`,
    );
  }
  if (errno === EACCES) {
    throw new DataDirLockError(`cannot open ${path} (permission denied): it must be writable by the daemon's user`);
  }
  if (errno === EROFS) {
    throw new DataDirLockError(`cannot open ${path} (read-only file system): the data directory must be writable`);
  }
  if (errno !== 0) throw new DataDirLockError(`cannot lock ${path} (errno ${errno})`);
  writeFileSync(path, `${process.pid}\n`);
}

function holderOf(path: string): string {
  try {
    const pid = readFileSync(path, "utf8").trim();
    return /^\d+$/.test(pid) ? ` (pid ${pid})` : "";
  } catch {
    return "";
  }
}
