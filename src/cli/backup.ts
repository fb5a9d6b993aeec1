/**
 * `ippool backup DEST`: a consistent copy of the data directory's store in a new directory DEST,
 * beside a running daemon or not. It reads the store as `fsck` does (store/read-only.ts: nothing in
 * the data directory changes), writes `DEST/ippool.mdb` and flushes it to disk. DEST then works as
 * a data directory: `ippool fsck --data-dir DEST` checks it, and a daemon starts from it.
 */
import { mkdirSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Config } from "../config/config.ts";
import type { Runtime } from "../runtime/index.ts";
import { holdDataDirForReading } from "../store/data-dir-lock.ts";
import { StoreOpenError } from "../store/errors.ts";
import { flushToDisk } from "../store/flush.ts";
import { STORE_FILE } from "../store/lmdb.ts";
import { openStoreReadOnly } from "../store/read-only.ts";

export interface BackupReport {
  readonly path: string;
  readonly bytes: number;
  readonly ms: number;
}

export async function runBackup(config: Config, runtime: Runtime, destination: string): Promise<BackupReport> {
  if (resolve(destination) === resolve(config.dataDir)) {
    throw new StoreOpenError(`backup: ${destination} is the data directory itself; name a new directory`);
  }
  prepareDestination(destination);
  const started = performance.now();
  const hold = holdDataDirForReading(runtime, config.dataDir);
  const opened = openStoreReadOnly(config.dataDir, hold === "daemon");
  const path = join(destination, STORE_FILE);
  try {
    await opened.store.backup(path);
  } finally {
    await opened.close();
  }
  flushToDisk(path);
  flushToDisk(destination);
  return { path, bytes: statSync(path).size, ms: performance.now() - started };
}

/** DEST is made, or must be an empty directory: a backup never overwrites anything. */
function prepareDestination(destination: string): void {
  let entries: string[];
  try {
    entries = readdirSync(destination);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") throw new StoreOpenError(`backup: cannot use ${destination} (${code})`);
    mkdirSync(destination, { recursive: true, mode: 0o750 });
    return;
  }
  if (entries.length > 0) {
    throw new StoreOpenError(`backup: ${destination} is not empty; name a new or empty directory`);
  }
}
