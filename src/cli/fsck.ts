/** `ippool fsck`: checks every configured pool and the elastic IPs in the data directory; exit 1 on any problem. */
import type { Config } from "../config/config.ts";
import { checkEips } from "../eip/fsck.ts";
import { publicPoolLayouts } from "../eip/service.ts";
import { checkPool, type PoolReport } from "../pool/fsck.ts";
import { PoolLayout } from "../pool/layout.ts";
import type { Runtime } from "../runtime/index.ts";
import { holdDataDirForReading } from "../store/data-dir-lock.ts";
import { checkStructure } from "../store/integrity.ts";
import { checkStoreFile, openStoreReadOnly } from "../store/read-only.ts";

/** Only reads: nothing in the data directory is created or changed (see store/read-only.ts). */
export async function runFsck(config: Config, runtime: Runtime): Promise<number> {
  const hold = holdDataDirForReading(runtime, config.dataDir);
  // A damaged store crashes whoever maps it: the child that walks it first, not this process.
  checkStoreFile(config.dataDir);
  checkStructure(runtime, config.dataDir, hold === "daemon");
  const opened = openStoreReadOnly(config.dataDir, hold === "daemon");
  const { store } = opened;
  const publicPools = publicPoolLayouts(config.eipPools);
  const reports: PoolReport[] = [
    ...config.pools.map((definition) => checkPool(store, new PoolLayout(definition))),
    ...checkEips(store, publicPools),
  ];
  let problems = 0;
  let text = "";
  for (const report of reports) {
    problems += report.problems.length;
    for (const problem of report.problems) text += `${report.pool}: ${problem}\n`;
    text += `${report.pool}: ${report.allocations} allocations, ${report.problems.length} problems\n`;
  }
  await opened.close();
  // Written out before the caller exits: a pipe that is slow to read must not lose the report's end.
  await new Promise<void>((resolve, reject) => {
    process.stdout.write(text, (error) => (error ? reject(error) : resolve()));
  });
  return problems === 0 ? 0 : 1;
}
