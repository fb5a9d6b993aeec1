/**
 * `ippool fsck`: checks every configured pool and the elastic IPs in the store (the data
 * directory's, or the shared database where `[store]` names one); exit 1 on any problem.
 */
import type { Config, StoreConfig } from "../config/config.ts";
import { checkEips, type EipIndexReader } from "../eip/fsck.ts";
import { publicPoolLayouts } from "../eip/service.ts";
import { checkPool, type PoolReport } from "../pool/fsck.ts";
import { PoolLayout } from "../pool/layout.ts";
import type { Runtime } from "../runtime/index.ts";
import { holdDataDirForReading } from "../store/data-dir-lock.ts";
import { checkStructure } from "../store/integrity.ts";
import { checkStoreFile, openStoreReadOnly } from "../store/read-only.ts";
import type { StoreView } from "../store/steps.ts";

export async function runFsck(config: Config, runtime: Runtime): Promise<number> {
  const { store } = config;
  const reports =
    store.backend === "postgres" ? await checkShared(config, store) : await checkEmbedded(config, runtime);
  return report(reports);
}

/** Only reads: nothing in the data directory is created or changed (see store/read-only.ts). */
async function checkEmbedded(config: Config, runtime: Runtime): Promise<PoolReport[]> {
  const hold = holdDataDirForReading(runtime, config.dataDir);
  // A damaged store crashes whoever maps it: the child that walks it first, not this process.
  checkStoreFile(config.dataDir);
  checkStructure(runtime, config.dataDir, hold === "daemon");
  const opened = openStoreReadOnly(config.dataDir, hold === "daemon");
  const { store } = opened;
  try {
    return checks(config, store, store);
  } finally {
    await opened.close();
  }
}

type SharedStoreConfig = Extract<StoreConfig, { backend: "postgres" }>;

/** One read step over the whole database: every row as of the moment each kind was fetched. */
async function checkShared(config: Config, shared: SharedStoreConfig): Promise<PoolReport[]> {
  const { PostgresStore } = await import("../store/postgres/store.ts");
  const store = await PostgresStore.open(shared.url, { daemon: shared.daemon });
  try {
    return await store.read((view) => checks(config, view));
  } finally {
    await store.close();
  }
}

function checks(config: Config, view: StoreView, indexes?: EipIndexReader): PoolReport[] {
  return [
    ...config.pools.map((definition) => checkPool(view, new PoolLayout(definition))),
    ...checkEips(view, publicPoolLayouts(config.eipPools), indexes),
  ];
}

async function report(reports: readonly PoolReport[]): Promise<number> {
  let problems = 0;
  let text = "";
  for (const report of reports) {
    problems += report.problems.length;
    for (const problem of report.problems) text += `${report.pool}: ${problem}\n`;
    text += `${report.pool}: ${report.allocations} allocations, ${report.problems.length} problems\n`;
  }
  // Written out before the caller exits: a pipe that is slow to read must not lose the report's end.
  await new Promise<void>((resolve, reject) => {
    process.stdout.write(text, (error) => (error ? reject(error) : resolve()));
  });
  return problems === 0 ? 0 : 1;
}
