/**
 * The fleet's EIP, instance and host locks over a real PostgreSQL (store/postgres/locks.ts): two
 * daemons' scopes on one key never overlap, scopes on different keys run at once, a lock held
 * past the timeout answers LOCK_TIMEOUT without running the change (each lock of a scope may
 * wait its own), a database that does not answer is given up on without running it either, its
 * connections then replaced (those a server gone away left hanging are not used again; a scope on
 * a sound one keeps its lock to its end), and nested scopes (a host lock inside an EIP's)
 * complete however many outermost scopes are open.
 */
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import type { AppError } from "../../../src/errors.ts";
import { FleetLocks } from "../../../src/store/postgres/locks.ts";
import { type Postgres, startPostgres } from "../../support/postgres.ts";
import { type Relay, startRelay } from "../../support/tcp-relay.ts";

let cluster: Postgres;
const opened: FleetLocks[] = [];
beforeAll(async () => {
  cluster = await startPostgres();
});
afterAll(async () => {
  await cluster.stop();
});
afterEach(async () => {
  for (const locks of opened.splice(0)) await locks.close();
});

/**
 * A daemon's locks: its own connections, as another process has; through `relay` if given
 * (silenced, the connections open at that moment hang, as those to a primary whose machine lost
 * power do; new ones reach the server, as they reach the promoted standby).
 */
function daemon(lockS?: number, silenceS?: number, relay?: Relay): FleetLocks {
  const url = relay === undefined ? cluster.url : cluster.url.replace(`:${cluster.port}/`, `:${relay.port}/`);
  const locks = new FleetLocks(url, {
    connectS: 5,
    ...(lockS === undefined ? {} : { lockS }),
    ...(silenceS === undefined ? {} : { silenceS }),
  });
  opened.push(locks);
  return locks;
}

/** "done", or the code of the error a scope failed with. */
const outcome = (scope: Promise<unknown>) =>
  scope.then(
    () => "done",
    (error: AppError) => error.code,
  );

/** A scope on `key` that has taken its lock and holds it until `release` is called; `holding` settles after. */
async function heldScope(locks: FleetLocks, key: string): Promise<{ release: () => void; holding: Promise<void> }> {
  const held = Promise.withResolvers<void>();
  let entered = false;
  const holding = locks.run([key], async () => {
    entered = true;
    await held.promise;
  });
  await until(() => entered, 5000);
  return { release: () => held.resolve(), holding };
}

/** Resolves when `condition` holds, or after `ms` (whichever first). */
async function until(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await Bun.sleep(10);
}

test("two daemons' scopes on one key never overlap; on different keys they run at once", async () => {
  const [a, b] = [daemon(), daemon()];
  let inside = 0;
  let most = 0;
  const scope = (locks: FleetLocks, key: string) =>
    locks.run([key], async () => {
      inside++;
      most = Math.max(most, inside);
      await until(() => inside === 2, 300); // waits for the other to come in, if it can
      inside--;
    });
  await Promise.all([scope(a, "eip:one"), scope(b, "eip:one")]);
  expect(most).toBe(1);
  most = 0;
  await Promise.all([scope(a, "eip:one"), scope(b, "eip:two")]);
  expect(most).toBe(2);
});

test("a lock another daemon holds past the timeout answers LOCK_TIMEOUT, and the change never runs", async () => {
  const [holder, waiter] = [daemon(), daemon(1)];
  const { release, holding } = await heldScope(holder, "host:hv1");
  let ran = false;
  const refused = await waiter
    .run(["eip:x", "host:hv1"], async () => {
      ran = true;
    })
    .then(
      () => undefined,
      (error: AppError) => error,
    );
  release();
  await holding;
  expect([refused?.status, refused?.code, ran]).toEqual([503, "LOCK_TIMEOUT", false]);
  expect(refused?.message).toContain("eip:x, host:hv1");
  await waiter.run(["host:hv1"], async () => {}); // and it is free again
});

test("each lock of a scope may wait its own timeout: two held for most of theirs in turn are both taken, not given up on", async () => {
  const [holder, waiter] = [daemon(), daemon(5, 1)];
  let entered = 0;
  const holding = (key: string, ms: number) =>
    holder.run([key], async () => {
      entered++;
      await Bun.sleep(ms);
    });
  const held = [holding("eip:a", 3_000), holding("host:b", 7_000)];
  await until(() => entered === 2, 5000);
  // eip:a is granted after about 3 s, host:b 4 s later: 7 s in all, past one lock timeout plus the store's.
  expect(await outcome(waiter.run(["eip:a", "host:b"], async () => {}))).toBe("done");
  await Promise.all(held);
});

test("40 outermost scopes at once, each taking a host lock inside, all complete", async () => {
  const locks = daemon();
  let done = 0;
  await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      locks.run([`eip:${i}`, `instance:vm-${i}`], () =>
        locks.run([`host:hv${i % 3}`], async () => {
          await Bun.sleep(5);
          done++;
        }),
      ),
    ),
  );
  expect(done).toBe(40);
});

test("a scope waiting for an outermost slot holds no lock that the scopes with slots need", async () => {
  const locks = daemon();
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  // More associations than there are slots, each to take the host's lock inside once let go on.
  const associations = Array.from({ length: 20 }, (_, i) =>
    locks.run([`eip:${i}`], async () => {
      await gate;
      await locks.run(["host:hv1"], async () => {});
    }),
  );
  await Bun.sleep(100);
  const reconciliation = locks.run(["host:hv1"], async () => {}); // waits for a slot
  await Bun.sleep(100);
  open();
  const finished = Promise.all([...associations, reconciliation]).then(() => "finished");
  expect(await Promise.race([finished, Bun.sleep(10_000).then(() => "stuck")])).toBe("finished");
});

test("with the database not answering, a scope answers 503 STORE_UNAVAILABLE after the store's timeout, not the lock's, and its change never runs", async () => {
  const locks = daemon(10, 2);
  await locks.run(["eip:warm"], async () => {}); // a connection open before the freeze
  let ran = false;
  cluster.freeze();
  try {
    const started = performance.now();
    const refused = await locks
      .run(["eip:frozen"], async () => {
        ran = true;
      })
      .then(
        () => undefined,
        (error: AppError) => error,
      );
    expect([refused?.status, refused?.code]).toEqual([503, "STORE_UNAVAILABLE"]);
    // Its transaction never started: nothing a live database makes wait, as a lock held elsewhere does.
    expect(refused?.message).toContain("did not answer within 2 s");
    expect(performance.now() - started).toBeGreaterThanOrEqual(1_900);
  } finally {
    cluster.thaw();
  }
  // The database answers again: the scope given up on rolls back rather than run the change late.
  await locks.run(["eip:frozen"], async () => {});
  await Bun.sleep(200);
  expect(ran).toBe(false);
});

test("after a scope is given up on, the next runs on new connections, not on those the silent server left open", async () => {
  const relay = await startRelay(cluster.port);
  try {
    const locks = daemon(1, 3, relay);
    // Three connections opened and left idle, as a daemon's pool has them after some moves.
    await Promise.all(["a", "b", "c"].map((key) => locks.run([`eip:${key}`], () => Bun.sleep(100))));
    relay.silence();
    expect(await outcome(locks.run(["eip:x"], async () => {}))).toBe("STORE_UNAVAILABLE");
    let ran = false;
    await locks.run(["eip:y"], async () => {
      ran = true;
    });
    expect(ran).toBe(true);
  } finally {
    await relay.close();
  }
});

test("a scope on a sound connection when another went silent keeps its lock to its end, however long", async () => {
  const relay = await startRelay(cluster.port);
  try {
    const locks = daemon(1, 2, relay);
    const rival = daemon(1);
    await locks.run(["eip:warm"], async () => {}); // connection 0, idle again
    const { release, holding } = await heldScope(locks, "eip:held"); // takes the idle connection 0
    await locks.run(["eip:other"], async () => {}); // connection 1, idle again
    relay.silence([1]);
    // The next scope takes the silent connection, is given up on, and the connections are replaced.
    expect(await outcome(locks.run(["eip:x"], async () => {}))).toBe("STORE_UNAVAILABLE");
    // Past the lock timeout and the store's, the holder still holds its lock in the database...
    await Bun.sleep(3_500);
    expect(await outcome(rival.run(["eip:held"], async () => {}))).toBe("LOCK_TIMEOUT");
    // ...and commits on its own connection when its change ends.
    release();
    expect(await outcome(holding)).toBe("done");
    expect(await outcome(rival.run(["eip:held"], async () => {}))).toBe("done");
  } finally {
    await relay.close();
  }
});
