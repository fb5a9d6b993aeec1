/** `ippool fsck`: checks every configured pool and the elastic IPs in the data directory; exit 1 on any problem. */
import type { Config } from "../config/config.ts";
import { checkEips } from "../eip/fsck.ts";
import { publicPoolLayouts } from "../eip/service.ts";
import { checkPool, type PoolReport } from "../pool/fsck.ts";
import { PoolLayout } from "../pool/layout.ts";
import { LmdbStore } from "../store/lmdb.ts";

export async function runFsck(config: Config): Promise<number> {
  const store = new LmdbStore(config.dataDir);
  const publicPools = publicPoolLayouts(config.eipPools);
  const reports: PoolReport[] = [
    ...config.pools.map((definition) => checkPool(store, new PoolLayout(definition))),
    ...checkEips(store, publicPools),
  ];
  let problems = 0;
  for (const report of reports) {
    problems += report.problems.length;
    for (const problem of report.problems) process.stdout.write(`${report.pool}: ${problem}\n`);
    process.stdout.write(`${report.pool}: ${report.allocations} allocations, ${report.problems.length} problems\n`);
  }
  await store.close();
  return problems === 0 ? 0 : 1;
}
