/**
 * Opening a data directory's store for reading only (`ippool fsck`): nothing in the directory is
 * created or changed, and a read-only mount or a copy works.
 *
 * LMDB keeps its reader table in a lock file beside the store (`ippool.mdb-lock`). Beside a running
 * daemon the store is opened in place, so that the daemon sees this reader in that table and does
 * not reuse the pages it reads (the table is the daemon's shared memory; the store file is only
 * read). Without a daemon, the store is opened through a symbolic link in a private temporary
 * directory, where LMDB keeps a lock file of its own, and the caller holds the data directory's
 * lock shared meanwhile (daemon/data-dir-lock.ts), so no daemon starts writing underneath.
 */
import { mkdtempSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { StoreOpenError } from "./errors.ts";
import { LmdbStore, STORE_FILE } from "./lmdb.ts";

export interface ReadOnlyStore {
  readonly store: LmdbStore;
  /** Closes the store and removes the temporary directory, if one was made. */
  close(): Promise<void>;
}

export function openStoreReadOnly(dataDir: string, daemonRunning: boolean): ReadOnlyStore {
  checkStoreFile(dataDir);
  const file = join(dataDir, STORE_FILE);
  if (daemonRunning) {
    const store = new LmdbStore(dataDir, { readOnly: true });
    return { store, close: () => store.close() };
  }
  const scratch = mkdtempSync(join(tmpdir(), "ippool-read-"));
  try {
    symlinkSync(resolve(file), join(scratch, STORE_FILE));
    const store = new LmdbStore(scratch, { readOnly: true });
    return {
      store,
      close: async () => {
        await store.close();
        rmSync(scratch, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}

/** A missing or empty store file is no store to read: said instead of letting LMDB make a new one. */
export function checkStoreFile(dataDir: string): void {
  const file = join(dataDir, STORE_FILE);
  let size: number;
  try {
    size = statSync(file).size;
  } catch (error) {
    throw new StoreOpenError(`no store at ${file} (${(error as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  if (size === 0) throw new StoreOpenError(`${file} is empty (0 bytes): it holds no store; restore a backup`);
}
