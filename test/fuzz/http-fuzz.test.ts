/**
 * The quick HTTP fuzz run for `make test`: FUZZ_REQUESTS requests (default 3000) from
 * FUZZ_SEED (random unless set; printed so a failure reproduces). The long run is the script:
 *   node_modules/.bin/bun test/fuzz/http-fuzz.ts --requests 100000
 */
import { expect, test } from "bun:test";
import { optionsFromEnv, runFuzz } from "./http-fuzz.ts";

test("no 5xx, JSON 4xx, rejected requests change nothing, the daemon stays up", async () => {
  const { requests, seed } = optionsFromEnv({ requests: 3000 });
  console.log(`http-fuzz: seed ${seed} (FUZZ_SEED=${seed} reproduces), ${requests} requests`);
  const report = await runFuzz({ requests, seed });
  const lines = report.failures.map(
    (f) => `seed=${f.seed} #${f.index}: ${f.reason}\n  sent: ${f.request}\n  got: ${f.answer}`,
  );
  console.log(
    `requests sent: ${report.requests}, failures: ${report.failures.length} (${report.seconds.toFixed(1)} s)`,
  );
  expect(lines).toEqual([]);
  expect(report.requests).toBe(requests);
}, 55_000);
