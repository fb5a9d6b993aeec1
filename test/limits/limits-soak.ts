/**
 * The long variant of test/integration/limits.test.ts (`make soak`): for `--seconds`, keeps
 * `--idle` idle TCP connections and `--slow` slow-loris clients open against the compiled daemon,
 * each reopened as soon as the daemon closes it, while the Unix socket and TCP are asked for
 * health and an allocate/release every second and oversized bodies are sent every ten seconds.
 *
 *   bun test/limits/limits-soak.ts [--seconds 120] [--idle 15000] [--slow 2000]
 *
 * Fails (exit 1) on any wrong answer, any slow-loris client that is not dropped or refused as it
 * should be, or daemon memory growing by more than 50 MiB between the tenth second of load and the
 * last; prints the figures either way.
 *
 * It runs itself in a network namespace of its own (root, as the host suites): 17,000 connections
 * from one address to one port, reopened some 1,700 times a second as the daemon closes them, fill
 * the default ephemeral port range (28,232 ports, connect() preferring the even half), and each
 * connect() then spent over a millisecond in the kernel looking for a free port (strace: 2,903
 * connects in 5 s), so this client, not the daemon, was the bottleneck. The namespace gets the
 * whole range without touching the host's.
 */
import { parseArgs } from "node:util";
import { Daemon } from "../support/daemon.ts";
import { bufferedAtMost, establishedOn, RawConnection, requireOpenFiles, rssKiB, type Target } from "./clients.ts";

if (process.env.LIMITS_SOAK_NETNS === undefined) {
  const inner = 'ip link set lo up && sysctl -qw net.ipv4.ip_local_port_range="1024 65535" && exec "$0" "$@"';
  const argv = ["unshare", "--net", "sh", "-c", inner, process.execPath, ...process.argv.slice(1)];
  const child = Bun.spawn(argv, {
    env: { ...process.env, LIMITS_SOAK_NETNS: "1" },
    stdio: ["inherit", "inherit", "inherit"],
  });
  process.exit(await child.exited);
}

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "120" },
    idle: { type: "string", default: "15000" },
    slow: { type: "string", default: "2000" },
  },
});
const SECONDS = Number(values.seconds);
const IDLE = Number(values.idle);
const SLOW = Number(values.slow);
const MAX_BODY = 64 * 1024;
const MiB = 1024 * 1024;
/** Growth of the daemon's memory from the first ten seconds of load to the last that counts as a leak. */
const RSS_GROWTH_LIMIT_KIB = 50 * 1024;
const SLOW_HEAD = `GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(40)}\r\n\r\n`;
const CLOSE = { connection: "close" };

const failures: string[] = [];
const tally = new Map<string, number>();
const count = (what: string) => tally.set(what, (tally.get(what) ?? 0) + 1);
const fail = (what: string) => {
  if (failures.length < 20) console.error(`limits-soak: FAIL ${what}`);
  failures.push(what);
};

let running = true;
const daemon = await Daemon.start();
const port = Number(new URL(daemon.baseUrl).port);
const tcp: Target = { port };

/** A new TCP connection; one the daemon does not accept is a failure (and is retried after a pause). */
async function reopen(): Promise<RawConnection | undefined> {
  try {
    return await RawConnection.open(tcp);
  } catch (error) {
    fail(`connect: ${(error as Error).message}`);
    await Bun.sleep(100);
    return undefined;
  }
}

/** Keeps one idle connection open, starting with `first`; every fifth makes a request first and then stays idle. */
async function idleSlot(index: number, first: RawConnection): Promise<void> {
  let connection: RawConnection | undefined = first;
  while (running) {
    connection ??= await reopen();
    if (!connection) continue;
    if (index % 5 === 0) connection.write("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    await Promise.race([connection.closed, stopped]);
    if (!running) return connection.destroy();
    count(connection.closedByPeer ? "idle closed by the daemon" : "idle closed otherwise");
    connection = undefined;
  }
}

/** Keeps one slow-loris client going: a head, a Content-Length body or a chunked body, a byte a second. */
async function slowSlot(index: number): Promise<void> {
  const kind = (["head", "length", "chunked"] as const)[index % 3] ?? "head";
  while (running) {
    const connection = await reopen();
    if (!connection) continue;
    if (kind === "head") connection.trickle(SLOW_HEAD, 1000);
    else {
      const framing = kind === "length" ? "Content-Length: 1000" : "Transfer-Encoding: chunked";
      connection.write(
        `POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`,
      );
      connection.trickle(kind === "length" ? " ".repeat(1000) : "1\r\n \r\n".repeat(200), 1000);
    }
    const opened = performance.now();
    await Promise.race([connection.closed, stopped]);
    if (!running) return connection.destroy();
    judgeSlow(kind, connection, performance.now() - opened);
  }
}

function judgeSlow(kind: "head" | "length" | "chunked", connection: RawConnection, ms: number): void {
  if (kind === "head") {
    const dropped = connection.closedByPeer && connection.answer === "" && connection.written < SLOW_HEAD.length;
    if (dropped) count("slow head dropped unanswered");
    else fail(`slow head: ${JSON.stringify(connection.answer.slice(0, 80))} after ${connection.written} bytes`);
    return;
  }
  if (connection.closedByPeer && connection.status === 408) count(`slow ${kind} body answered 408`);
  else
    fail(
      `slow ${kind} body after ${Math.round(ms)} ms, ${connection.written} bytes (${connection.error ?? "no error"}): ${JSON.stringify(connection.answer.slice(0, 80))}`,
    );
}

let stopSignal!: () => void;
const stopped = new Promise<void>((resolve) => {
  stopSignal = resolve;
});

const latencies: number[] = [];
async function timed(via: "tcp" | "unix"): Promise<void> {
  const started = performance.now();
  const response = await daemon.fetch("/api/v1/health", { via, headers: CLOSE });
  await response.arrayBuffer();
  if (via === "unix") latencies.push(performance.now() - started);
  if (response.status !== 200) fail(`health over ${via}: ${response.status}`);
}

async function allocateAndRelease(via: "tcp" | "unix", vmId: string): Promise<void> {
  const body = JSON.stringify({ vm_id: vmId });
  const allocated = await daemon.fetch("/api/v1/ip/allocate", { method: "POST", body, headers: CLOSE, via });
  await allocated.arrayBuffer();
  const released = await daemon.fetch(`/api/v1/ip/release/${vmId}`, { method: "DELETE", headers: CLOSE, via });
  await released.arrayBuffer();
  if (allocated.status !== 201 || released.status !== 200) {
    fail(`allocate/release over ${via}: ${allocated.status}/${released.status}`);
  }
}

const head = (framing: string) =>
  `POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
const CHUNK = Buffer.concat([Buffer.from("10000\r\n"), Buffer.alloc(0x10000, 0x20), Buffer.from("\r\n")]);
let mostWrittenBeforeRefusal = 0;

async function oversized(target: Target): Promise<void> {
  const declared = await RawConnection.open(target);
  declared.write(Buffer.concat([Buffer.from(head(`Content-Length: ${1024 * MiB}`)), Buffer.alloc(4096, 0x20)]));
  const chunked = await RawConnection.open(target);
  chunked.write(head("Transfer-Encoding: chunked"));
  chunked.flood(CHUNK, 100 * MiB);
  await Promise.all([declared.closed, chunked.closed]);
  for (const connection of [declared, chunked]) {
    if (connection.status !== 413) fail(`oversized body: ${JSON.stringify(connection.answer.slice(0, 80))}`);
  }
  mostWrittenBeforeRefusal = Math.max(mostWrittenBeforeRefusal, chunked.written);
  if (chunked.written >= bufferedAtMost(MAX_BODY))
    fail(`chunked body: ${chunked.written} bytes written before refusal`);
  count("oversized bodies refused");
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

async function main(): Promise<void> {
  requireOpenFiles("self", IDLE + SLOW + 200, "the soak process");
  requireOpenFiles(daemon.proc.pid, IDLE + SLOW + 200, "the daemon");
  for (let i = 0; i < 200; i++) await timed("unix");
  const quiet = [...latencies];
  latencies.length = 0;
  const rssStart = rssKiB(daemon.proc.pid);
  const started = performance.now();

  const slots: Promise<void>[] = [];
  // Opened in batches first, so the listen backlog is not overrun; reopened one by one later.
  const idle = await RawConnection.openMany(tcp, IDLE);
  idle.forEach((connection, i) => {
    slots.push(idleSlot(i, connection));
  });
  for (let i = 0; i < SLOW; i++) {
    slots.push(slowSlot(i));
    if (i % 250 === 249) await Bun.sleep(50);
  }

  const established: number[] = [];
  let rssMax = rssStart;
  let rssLoaded = rssStart;
  let rssLast = rssStart;
  for (let second = 1; performance.now() - started < SECONDS * 1000; second++) {
    await Bun.sleep(Math.max(0, started + second * 1000 - performance.now()));
    established.push(await establishedOn(port));
    rssLast = rssKiB(daemon.proc.pid);
    rssMax = Math.max(rssMax, rssLast);
    if (second === 10) rssLoaded = rssLast;
    for (let i = 0; i < 10; i++) await timed("unix");
    await timed("tcp");
    await allocateAndRelease("unix", `soak-unix-${second}`);
    await allocateAndRelease("tcp", `soak-tcp-${second}`);
    if (second % 10 === 0) {
      await oversized(tcp);
      await oversized({ unix: daemon.socket });
      const last = established.at(-1);
      console.log(
        `limits-soak: ${second} s, ${last} established, socket health p50 ${percentile(latencies, 50).toFixed(3)} ms, daemon RSS ${rssKiB(daemon.proc.pid)} KiB`,
      );
    }
  }
  running = false;
  stopSignal();
  await Promise.all(slots);
  const rssEnd = rssKiB(daemon.proc.pid);
  if (rssLast - rssLoaded > RSS_GROWTH_LIMIT_KIB)
    fail(`daemon RSS grew from ${rssLoaded} to ${rssLast} KiB under load`);

  console.log(`limits-soak: ${SECONDS} s with ${IDLE} idle connections and ${SLOW} slow-loris clients kept open`);
  console.log(
    `limits-soak: established on the daemon's side, sampled each second: min ${Math.min(...established)}, median ${percentile(established, 50)}, max ${Math.max(...established)}`,
  );
  console.log(
    `limits-soak: socket health p50/p99 ms: ${percentile(quiet, 50).toFixed(3)}/${percentile(quiet, 99).toFixed(3)} alone (200), ${percentile(latencies, 50).toFixed(3)}/${percentile(latencies, 99).toFixed(3)} under load (${latencies.length})`,
  );
  for (const [what, n] of [...tally].sort()) console.log(`limits-soak: ${what}: ${n}`);
  console.log(`limits-soak: most bytes a chunked upload wrote before its 413: ${mostWrittenBeforeRefusal}`);
  console.log(
    `limits-soak: daemon RSS KiB: start ${rssStart}, at 10 s ${rssLoaded}, max ${rssMax}, last under load ${rssLast}, after ${rssEnd}`,
  );
  console.log(`limits-soak: failures: ${failures.length}`);
}

try {
  await main();
} finally {
  running = false;
  stopSignal();
  await daemon.dispose();
}
process.exit(failures.length === 0 ? 0 : 1);
