/**
 * Opening the daemon's store so that a damaged one never starts and never crashes the process.
 *
 * - A new store is made only where none ever was: `store.id` (marker.ts) is written before it,
 *   so a directory whose marker says a store existed and whose `ippool.mdb` is missing or empty is
 *   refused, never taken for a new one.
 * - The store's structure is walked in a child process (`ippool walk-store`) before the daemon
 *   maps it, whenever the file may have changed since a clean stop: after a crash, on a store
 *   adopted without a marker, or when its size, inode or change time differ from the marker's. A
 *   page LMDB trips over (a native crash, or an error) makes the child fail, and the daemon
 *   refuses to start with one line instead of crashing.
 * - The store carries its identity inside too; a file that is another directory's store is refused.
 * - The files LMDB writes must be writable by the daemon: checked first, as LMDB's own failure
 *   there is a crash.
 */
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log/logger.ts";
import type { Runtime } from "../runtime/index.ts";
import { StorageFullError, StoreDamagedError } from "./errors.ts";
import { freeBytes, LmdbStore, STORE_FILE } from "./lmdb.ts";
import { fileIdentity, readMarker, type StoreMarker, writeMarker } from "./marker.ts";

const RESTORE = "restore a backup (README: Backup and restore)";
/** Free space a new store needs to start in: its first pages, the marker, and room to write. */
const NEW_STORE_MIN_BYTES = 2 ** 20;

/** Opens the store of `dataDir` for the daemon (whose lock on the directory is held), or refuses. */
export async function openStoreSafely(dataDir: string, runtime: Runtime, logger: Logger): Promise<LmdbStore> {
  const file = join(dataDir, STORE_FILE);
  checkWritable(file);
  checkWritable(`${file}-lock`);
  const marker = readMarker(dataDir);
  const found = fileIdentity(file);
  if (marker === null || marker.state === "creating") {
    if (found === null || (marker !== null && found.size === 0)) return await createStore(dataDir, marker);
    if (found.size === 0) {
      throw new StoreDamagedError(
        `${file} is empty (0 bytes) and ${dataDir} has no store.id: not a store ippool made; ${RESTORE}, or remove the file if this directory is new`,
      );
    }
  } else {
    if (found === null) throw new StoreDamagedError(`${file} is missing where store ${marker.id} was: ${RESTORE}`);
    if (found.size === 0)
      throw new StoreDamagedError(`${file} is empty (0 bytes) where store ${marker.id} was: ${RESTORE}`);
  }
  const untouched = marker?.state === "stopped" && sameFile(marker.file, found);
  if (!untouched) {
    // The directory's lock is this daemon's and the store is not open yet: nobody writes to it.
    const { ms, entries } = checkStructure(runtime, dataDir, false);
    logger.info("store checked", { file, ms, entries: JSON.stringify(entries) });
  }
  const store = new LmdbStore(dataDir);
  const id = await identify(store, marker, file);
  const running: StoreMarker = { id, created: marker?.created ?? new Date().toISOString(), state: "running" };
  if (!markerWritten(dataDir, running, logger)) return store;
  if (marker === null) logger.info("store adopted: store.id written", { store: id });
  return store;
}

/**
 * Writes the marker of a store that exists; a full file system is no reason to stop a daemon
 * that can still serve reads. Left as it was, the marker is still safe: "stopped" with the file's
 * identity holds only while the file is unchanged, and "running" makes the next start check.
 */
function markerWritten(dataDir: string, marker: StoreMarker, logger: Pick<Logger, "warn">): boolean {
  try {
    writeMarker(dataDir, marker);
    return true;
  } catch (error) {
    if (!noSpace(error)) throw error;
    logger.warn("store.id not updated: the file system is full", { state: marker.state });
    return false;
  }
}

function noSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOSPC" || code === "EDQUOT";
}

/** After the store is closed at a clean stop: the next start may skip the walk if the file is untouched. */
export function markStopped(dataDir: string, logger: Pick<Logger, "warn">): void {
  const marker = readMarker(dataDir);
  const file = fileIdentity(join(dataDir, STORE_FILE));
  if (marker === null || file === null) return;
  markerWritten(dataDir, { ...marker, state: "stopped", file }, logger);
}

async function createStore(dataDir: string, marker: StoreMarker | null): Promise<LmdbStore> {
  // LMDB making a file where the space runs out mid-way crashes (SIGBUS): refuse first, by name.
  const free = freeBytes(dataDir);
  if (free < NEW_STORE_MIN_BYTES) {
    throw new StorageFullError(
      `cannot create a store in ${dataDir}: its file system has ${free} bytes free (at least ${NEW_STORE_MIN_BYTES} needed)`,
    );
  }
  const id = marker?.id ?? randomUUID();
  const created = marker?.created ?? new Date().toISOString();
  // The marker first: from here on a missing store file is damage, not a new directory.
  writeMarker(dataDir, { id, created, state: "creating" });
  const store = new LmdbStore(dataDir);
  await store.putStoreId(id);
  writeMarker(dataDir, { id, created, state: "running" });
  return store;
}

/** The store's identity: the marker's, which the store must carry; a store without one gets it. */
async function identify(store: LmdbStore, marker: StoreMarker | null, file: string): Promise<string> {
  const inside = store.storeId();
  if (marker !== null && inside !== undefined && inside !== marker.id) {
    await store.close();
    throw new StoreDamagedError(
      `${file} is store ${inside}, not this directory's store ${marker.id}: put back the right file, or remove store.id to adopt this one on purpose`,
    );
  }
  const id = inside ?? marker?.id ?? randomUUID();
  if (inside === undefined) await store.putStoreId(id);
  return id;
}

function sameFile(before: StoreMarker["file"], now: ReturnType<typeof fileIdentity>): boolean {
  return (
    before !== undefined &&
    now !== null &&
    before.size === now.size &&
    before.ino === now.ino &&
    before.ctimeNs === now.ctimeNs &&
    before.mtimeNs === now.mtimeNs
  );
}

/**
 * Runs `ippool walk-store` on the directory in a child process: any failure or crash of the child
 * is a `StoreDamagedError`. Returns the entries of each sub-database and the time it took.
 * `besideDaemon`: a daemon writes to the store meanwhile, so the walk must read in place, seen by
 * the daemon as a reader (store/read-only.ts).
 */
export function checkStructure(
  runtime: Runtime,
  dataDir: string,
  besideDaemon: boolean,
): { ms: number; entries: Record<string, number> } {
  const file = join(dataDir, STORE_FILE);
  const [command, ...args] = runtime.selfCommand();
  const started = performance.now();
  const walk = [...args, "walk-store", dataDir, ...(besideDaemon ? ["--beside-daemon"] : [])];
  const child = spawnSync(command as string, walk, { encoding: "utf8" });
  const ms = Math.round(performance.now() - started);
  if (child.error) throw new StoreDamagedError(`cannot check ${file}: ${child.error.message}`);
  if (child.signal) {
    throw new StoreDamagedError(`${file} is damaged: reading it crashed the check (${child.signal}); ${RESTORE}`);
  }
  if (child.status !== 0) {
    const reason = child.stderr.trim().split("\n").pop() ?? `exit ${child.status}`;
    throw new StoreDamagedError(`${file} is damaged: ${reason.replace(/^ippool: (error: )?/, "")}; ${RESTORE}`);
  }
  return { ms, entries: JSON.parse(child.stdout) as Record<string, number> };
}

/** A file LMDB will write but may not is refused here, by name (LMDB itself would crash). */
function checkWritable(path: string): void {
  if (!existsSync(path)) return;
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch {
    const { uid, mode } = statSync(path);
    throw new StoreDamagedError(
      `${path} is not writable by this user (owner uid ${uid}, mode 0${(mode & 0o777).toString(8)}): give it to the daemon's user (chown), or remove it if it is ${STORE_FILE}-lock and no daemon runs`,
    );
  }
}
