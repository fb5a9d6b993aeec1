/**
 * Full allocation lists against a pool of about a million allocations: the daemon's RSS and the
 * allocate latency while four clients read the whole list at once, against the same with no list.
 * `bun bench/list-stream.ts [--percent 96] [--allocations 2000]` fills a /12 in-process
 * (bench/fill.ts), starts dist/ippool on it and prints one line:
 * `LIST_STREAM allocated=N list_bytes=B list_s=… rss_idle_mib=… rss_max_mib=… growth_mib=… anon_…
 *  alloc_p50_idle_ms=… alloc_p99_idle_ms=… alloc_p50_lists_ms=… alloc_p99_lists_ms=…`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../test/support/free-port.ts";

const { values } = parseArgs({
  options: { percent: { type: "string", default: "96" }, allocations: { type: "string", default: "2000" } },
  strict: true,
});
const ROOT = join(import.meta.dir, "..");
const dir = mkdtempSync(join(tmpdir(), "ippool-bench-list-"));
const config = join(dir, "ippool.toml");
const port = freePort();
// log_level warn: request lines would fill the unread stdout pipe and stall the daemon.
writeFileSync(
  config,
  `[server]\nlisten = "127.0.0.1:${port}"\nsocket = ""\ndata_dir = "${dir}/data"\nlog_level = "warn"\n\n[[pools]]\nname = "big"\ncidr = "10.16.0.0/12"\n`,
);

try {
  const fill = Bun.spawnSync([process.execPath, "bench/fill.ts", "--config", config, "--percent", values.percent], {
    cwd: ROOT,
    stdout: "inherit",
    stderr: "inherit",
  });
  if (fill.exitCode !== 0) throw new Error("bench/fill.ts failed");
  const daemon = Bun.spawn([join(ROOT, "dist/ippool"), "--config", config], { stdout: "inherit", stderr: "inherit" });
  const base = `http://127.0.0.1:${port}`;
  await healthy(base);
  // MiB; RssAnon is the process's own memory, VmRSS also counts the store's pages it has mapped.
  const status = (field: string) =>
    Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${daemon.pid}/status`, "utf8"))?.[1]) / 1024;
  const rss = () => status("VmRSS");
  const anon = () => status("RssAnon");
  const count = Number(values.allocations);
  await allocateTimes(base, "warm", 200);
  const rssIdle = rss();
  const anonIdle = anon();
  const idle = await allocateTimes(base, "idle", count);

  let rssMax = rssIdle;
  let anonMax = anonIdle;
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, rss());
    anonMax = Math.max(anonMax, anon());
  }, 50);
  const started = performance.now();
  let listing = true;
  const lists = Promise.all(Array.from({ length: 4 }, () => readWholeList(base))).finally(() => {
    listing = false;
  });
  const during: number[] = [];
  for (let i = 0; listing; i++) during.push(...(await allocateTimes(base, `during-${i}`, 50)));
  const bytes = await lists;
  const listSeconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const { allocated } = (await (await fetch(`${base}/api/v1/ip/stats`)).json()) as { allocated: number };
  daemon.kill("SIGTERM");
  await daemon.exited;
  console.log(
    [
      "LIST_STREAM",
      `allocated=${allocated}`,
      `list_bytes=${bytes[0]}`,
      `list_s=${listSeconds.toFixed(1)}`,
      `rss_idle_mib=${rssIdle.toFixed(0)}`,
      `rss_max_mib=${rssMax.toFixed(0)}`,
      `growth_mib=${(rssMax - rssIdle).toFixed(0)}`,
      `anon_idle_mib=${anonIdle.toFixed(0)}`,
      `anon_max_mib=${anonMax.toFixed(0)}`,
      `alloc_p50_idle_ms=${percentile(idle, 0.5)}`,
      `alloc_p99_idle_ms=${percentile(idle, 0.99)}`,
      `alloc_p50_lists_ms=${percentile(during, 0.5)}`,
      `alloc_p99_lists_ms=${percentile(during, 0.99)}`,
      `allocations_during_lists=${during.length}`,
    ].join(" "),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** Waits (bounded) until the daemon answers its health check. */
async function healthy(base: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${base}/api/v1/health`)).ok) return;
    } catch {}
    await Bun.sleep(20);
  }
  throw new Error("the daemon did not answer within 60 s");
}

/** Sequential allocations; the milliseconds each took. */
async function allocateTimes(base: string, prefix: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const response = await fetch(`${base}/api/v1/ip/allocate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ vm_id: `bench-${prefix}-${i}` }),
    });
    await response.arrayBuffer();
    if (response.status !== 201) throw new Error(`allocate answered ${response.status}`);
    times.push(performance.now() - t0);
  }
  return times;
}

/** Reads a whole list, counting its bytes without keeping them. */
async function readWholeList(base: string): Promise<number> {
  const response = await fetch(`${base}/api/v1/ip/allocations`);
  let bytes = 0;
  for await (const chunk of response.body as ReadableStream<Uint8Array>) bytes += chunk.length;
  return bytes;
}

function percentile(values: readonly number[], p: number): string {
  const sorted = [...values].sort((a, b) => a - b);
  return (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0).toFixed(2);
}
