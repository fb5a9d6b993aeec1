/** `ippool fsck`: checks every configured pool in the data directory; exit 1 on any problem. */
import type { Config } from "../config/config.ts";
import { checkPool } from "../pool/fsck.ts";
import { PoolLayout } from "../pool/layout.ts";
import { LmdbStore } from "../store/lmdb.ts";

export async function runFsck(config: Config): Promise<number> {
  const store = new LmdbStore(config.dataDir);
  let problems = 0;
  for (const definition of config.pools) {
    const report = checkPool(store, new PoolLayout(definition));
    problems += report.problems.length;
    for (const problem of report.problems) process.stdout.write(`${report.pool}: ${problem}\n`);
    process.stdout.write(`${report.pool}: ${report.allocations} allocations, ${report.problems.length} problems\n`);
  }
  await store.close();
  return problems === 0 ? 0 : 1;
}
