/**
 * `ippool walk-store DATA_DIR`: opens the store read-only and counts every sub-database's entries
 * with LMDB's native cursor, touching every branch and leaf page. The daemon runs it in a child
 * process before it maps a store that may have changed (store/integrity.ts): a damaged page
 * crashes or fails this process, not the daemon. Prints the counts as one JSON object.
 */
import { StoreDamagedError } from "../store/errors.ts";
import { openStoreReadOnly } from "../store/read-only.ts";

export async function walkStore(dataDir: string, besideDaemon: boolean): Promise<Record<string, number>> {
  const opened = openStoreReadOnly(dataDir, besideDaemon);
  try {
    const counts = opened.store.entryCounts();
    // Every store ippool makes lists its sub-databases from the first start; a read-only open
    // quietly skips those it cannot find, so what the file lists must all have been walked.
    const listed = opened.store.listedDatabases();
    if (listed.length === 0) throw new StoreDamagedError("it lists no sub-databases (its main database is unreadable)");
    const unread = listed.filter((name) => !(name in counts));
    if (unread.length > 0) throw new StoreDamagedError(`its sub-databases ${unread.join(", ")} cannot be opened`);
    return counts;
  } finally {
    await opened.close();
  }
}
