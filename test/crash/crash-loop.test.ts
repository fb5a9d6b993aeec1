/**
 * Quick variant of the crash-consistency loop (test/crash/crash-loop.ts) for `make test`:
 * 10 kill -9 trials on one data directory, seeded from the clock (the seed is printed).
 */
import { beforeAll, expect, test } from "bun:test";
import { ensureBinary, runCrashLoop } from "./crash-loop.ts";

const TRIALS = 10;

beforeAll(ensureBinary, 120_000);

test(`${TRIALS} kill -9 trials under mixed traffic lose nothing acknowledged and hold no address twice`, async () => {
  const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const lines: string[] = [];
  const result = await runCrashLoop({ trials: TRIALS, seed, log: (line) => lines.push(line) });
  console.log(
    `crash loop: seed ${seed}, trials ${result.trials}, kills ${result.kills}, violations ${result.violations}`,
  );
  expect(result.messages).toEqual([]);
  expect(result.trials).toBe(TRIALS);
  expect(result.kills).toBe(TRIALS);
  expect(result.checked).toBeGreaterThan(0);
  expect(result.violations).toBe(0);
}, 60_000);
