/**
 * Quick variants of the crash-consistency loop (test/crash/crash-loop.ts) for `make test`, with
 * the seed CRASH_SEED gives (`make test` fixes it; without it, from the clock; printed either way): 10 kill -9 trials on one data
 * directory, 10 on the shared store (PostgreSQL), 5 more with EIPs associated with VMs on a
 * namespace testbed (as root), and 5 with both: hosts and the shared store.
 */
import { expect, test } from "bun:test";
import { daemonStore } from "../support/daemon-store.ts";
import { type CrashLoopOptions, runCrashLoop } from "./crash-loop.ts";

async function run(options: Omit<CrashLoopOptions, "seed" | "log">, attempt = 0) {
  const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31)) + attempt;
  const lines: string[] = [];
  const result = await runCrashLoop({ ...options, seed, log: (line) => lines.push(line) });
  const where = `${options.hosts ? " with hosts" : ""}${options.store ? " on PostgreSQL" : ""}`;
  console.log(
    `crash loop${where}: seed ${seed}, trials ${result.trials}, kills ${result.kills}, violations ${result.violations}`,
  );
  expect(result.messages).toEqual([]);
  expect(result.trials).toBe(options.trials);
  expect(result.kills).toBe(options.trials);
  expect(result.checked).toBeGreaterThan(0);
  expect(result.violations).toBe(0);
  return result;
}

test("10 kill -9 trials under mixed traffic lose nothing acknowledged and hold no address twice", async () => {
  await run({ trials: 10 });
}, 60_000);

test("10 kill -9 trials on the shared store (PostgreSQL) lose nothing acknowledged and hold no address twice", async () => {
  const store = await daemonStore("postgres");
  try {
    await run({ trials: 10, store: store.toml });
  } finally {
    await store.stop();
  }
}, 90_000);

test("5 kill -9 trials while EIPs are associated over SSH keep every acknowledged association, and the hosts converge to the records", async () => {
  const { associations } = await run({ trials: 5, hosts: true });
  expect(associations?.associationsAcknowledged).toBeGreaterThan(0);
  expect(associations?.hostMappingsChecked).toBeGreaterThan(0);
  expect(associations?.killsDuringAssociation).toBeGreaterThan(0);
}, 90_000);

test("5 kill -9 trials with EIPs associated over SSH, on the shared store (PostgreSQL), keep every acknowledged association, and the hosts converge", async () => {
  const once = async (attempt: number) => {
    // The daemon runs in the testbed's network namespace: it reaches the database through its Unix socket.
    const store = await daemonStore("postgres", { overSocket: true });
    try {
      return (await run({ trials: 5, hosts: true, store: store.toml }, attempt)).associations;
    } finally {
      await store.stop();
    }
  };
  // Associations over SSH on the shared store are slow next to the kills (within 1.2 s of a
  // start): a run can end with no association left standing at any check (1 of 22 requests
  // acknowledged with one seed; CI on a slow hour saw none checked with the fixed seed, which gives
  // 7 here). Then five more trials on a new database, with the next seed, at most twice.
  let associations = await once(0);
  for (let attempt = 1; attempt <= 2 && associations?.hostMappingsChecked === 0; attempt++) {
    associations = await once(attempt);
  }
  expect(associations?.associationsAcknowledged).toBeGreaterThan(0);
  expect(associations?.hostMappingsChecked).toBeGreaterThan(0);
}, 240_000);
