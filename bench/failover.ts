import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { configToml } from "../test/support/config-toml.ts";
import { Daemon } from "../test/support/daemon.ts";
import { Testbed } from "../test/support/testbed.ts";

const { values } = parseArgs({
  options: {
    moves: { type: "string", default: process.env.BENCH_FAILOVER_MOVES ?? "20" },
    bulk: { type: "string", default: process.env.BENCH_FAILOVER_BULK ?? "1000" },
    raw: { type: "string", default: "bench/results/raw/failover.json" },
  },
  strict: true,
});
const MOVES = Number(values.moves);
const BULK = Number(values.bulk);
if (!Number.isInteger(MOVES) || MOVES < 1) throw new Error("--moves: a positive integer");
if (!Number.isInteger(BULK) || BULK < 200 || BULK > 1000) throw new Error("--bulk: 200 to 1000");
/** Associations compared at each end of the bulk run, and disassociations measured at the top. */
const WINDOW = 100;
const PROJECT = "acme";
const PROBE_TIMEOUT_MS = 10_000;
/**
 * The measured association windows start one association every PACE_MS, and wait ARP_DRAIN_MS
 * after the back-to-back fill: each association's gratuitous ARP (arping, ~1 s) holds one of the
 * daemon's 8 SSH channels to the host, and back to back they fill all 8 (see the fill's row).
 */
const PACE_MS = 250;
const ARP_DRAIN_MS = 1100;
/** Between starting the uplink's probe loop and sending the request, so the loop is surely running. */
const PROBE_LEAD_MS = 10;
/** Bulk private addresses: 192.168.96.0/22 (not the hosts' VM network; nothing answers there). */
const BULK_VM_CIDR = "192.168.96.0/22";
/** Bulk EIPs: a /22 beside the testbed's 100.64.0.0/25 (1,022 usable). */
const BULK_EIP_CIDR = "100.64.4.0/22";

const now = () => performance.timeOrigin + performance.now();
const log = (message: string) => process.stderr.write(`bench: failover: ${message}\n`);
const round = (ms: number) => Math.round(ms * 100) / 100;

interface Move {
  readonly n: number;
  readonly oldHost: "reachable" | "down";
  readonly from: string;
  readonly to: string;
  readonly status: number;
  /** Request sent → answer received, ms. */
  readonly requestMs: number;
  /** Request sent → first probe answer from the new VM, ms (null: none within PROBE_TIMEOUT_MS). */
  readonly failoverMs: number | null;
  /** Old host down only: hostUp → its stale rule and address removed by the daemon, ms. */
  readonly cleanedMs?: number | null;
  readonly error?: string;
}

function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}
const fmt = (ms: number) => (Number.isNaN(ms) ? "n/a" : ms.toFixed(1));
const stats = (samples: readonly number[]) => ({
  count: samples.length,
  p50: percentile(samples, 50),
  p95: percentile(samples, 95),
  max: samples.length ? Math.max(...samples) : Number.NaN,
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const started = now();
  while (!(await check())) {
    if (now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await Bun.sleep(20);
  }
  return now() - started;
}

function config(bed: Testbed): string {
  return configToml({
    pools: [
      { name: "vms", cidr: "192.168.100.0/24", gateway: "192.168.100.1" },
      { name: "bulkvms", cidr: BULK_VM_CIDR },
    ],
    eipPools: { public: bed.eipCidr, bulkeips: BULK_EIP_CIDR },
    projects: [{ name: PROJECT, apiKey: `bench-${bed.id}`, quota: BULK + 100 }],
    hosts: bed.hostSpecs({ connectTimeoutMs: 1000, commandTimeoutMs: 3000 }),
  });
}

async function main(): Promise<void> {
  const began = now();
  const bulkNames = Array.from({ length: BULK }, (_, i) => `bulk-${String(i + 1).padStart(4, "0")}`);
  log(`testbed: hv1 (fo-a), hv2 (fo-b), hv3 (bare libvirt domains)`);
  const bed = await Testbed.create({
    hosts: [{ name: "hv1", vms: [{ name: "fo-a" }] }, { name: "hv2", vms: [{ name: "fo-b" }] }, { name: "hv3" }],
  });
  let daemon: Daemon | undefined;
  try {
    // Data on disk, as in production (every answer waits for the LMDB flush).
    const dir = mkdtempSync("/var/tmp/ippool-bench-failover.");
    daemon = await Daemon.start({ config: config(bed), prefix: bed.daemonNetnsPrefix(), dir });
    const d = daemon;
    await waitUntil(
      async () => bed.hosts.every((h) => d.logs.includes(`host connected host=${h.name}`)),
      15_000,
      "daemon connected to every host",
    );
    const call = async (method: string, path: string, body?: unknown) => {
      const started = now();
      const response = await d.json(path, {
        method,
        via: "unix",
        headers: { "content-type": "application/json", "x-project": PROJECT },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { ...response, ms: now() - started, sentAt: started };
    };
    const must = async (method: string, path: string, body?: unknown) => {
      const response = await call(method, path, body);
      if (response.status >= 300)
        throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`);
      return response;
    };

    // --- 1. failover ---------------------------------------------------------------------------
    for (const [host, vm] of [
      ["hv1", "fo-a"],
      ["hv2", "fo-b"],
    ] as const) {
      await must("POST", "/api/v1/ip/allocate", { vm_id: vm, ip: bed.vm(vm).privateIp, host, pool: "vms" });
    }
    const eip = (await must("POST", "/elastic-ips", { pool: "public" })).body as { id: string; public_ip: string };
    await must("POST", `/elastic-ips/${eip.id}/associate`, { instance_id: "fo-a" });
    await bed.probeUntil(eip.public_ip, "fo-a", PROBE_TIMEOUT_MS);
    const inMap = async (host: string) =>
      (await bed.hostExec(host, ["nft", "list", "map", "ip", "ippool", "eip_dnat"])).stdout.includes(
        `${eip.public_ip} :`,
      );
    const cleaned = async (host: string) =>
      !(await inMap(host)) && !(await bed.hostAddresses(host)).includes(eip.public_ip);

    const moves: Move[] = [];
    let at = { vm: "fo-a", host: "hv1" };
    const other = (vm: string) => (vm === "fo-a" ? { vm: "fo-b", host: "hv2" } : { vm: "fo-a", host: "hv1" });
    for (const oldHost of ["reachable", "down"] as const) {
      log(`${MOVES} moves with the old host ${oldHost}`);
      for (let n = 1; n <= MOVES; n++) {
        const from = at;
        const to = other(from.vm);
        if (oldHost === "down") await bed.hostDown(from.host);
        const probing = now();
        const answered = bed.probeUntil(eip.public_ip, to.vm, PROBE_TIMEOUT_MS).then(
          (ms) => probing + ms,
          (error: Error) => error,
        );
        await Bun.sleep(PROBE_LEAD_MS);
        const response = await call("POST", `/elastic-ips/${eip.id}/associate`, {
          instance_id: to.vm,
          allow_reassociation: true,
        });
        const outcome = await answered;
        const move: Move = {
          n,
          oldHost,
          from: `${from.vm}@${from.host}`,
          to: `${to.vm}@${to.host}`,
          status: response.status,
          requestMs: round(response.ms),
          failoverMs: typeof outcome === "number" ? round(outcome - response.sentAt) : null,
          ...(response.status === 200 && typeof outcome === "number"
            ? {}
            : {
                error: [
                  response.status === 200 ? "" : JSON.stringify(response.body),
                  typeof outcome === "number" ? "" : outcome.message,
                ]
                  .filter(Boolean)
                  .join("; "),
              }),
        };
        if (response.status === 200) at = to;
        if (oldHost === "down") {
          await bed.hostUp(from.host);
          let cleanedMs: number | null = null;
          try {
            cleanedMs = round(await waitUntil(() => cleaned(from.host), 60_000, `${from.host} reconciled`));
          } catch (error) {
            log(String(error));
          }
          moves.push({ ...move, cleanedMs });
        } else {
          moves.push(move);
          // The old host is cleaned after the answer (not waited for by the request); let it finish.
          await waitUntil(() => cleaned(from.host), 10_000, `${from.host} cleaned after the move`).catch((error) =>
            log(String(error)),
          );
        }
        const last = moves[moves.length - 1];
        log(
          `  ${oldHost} #${n} ${last?.from} → ${last?.to}: ${last?.status} request ${last?.requestMs} ms, failover ${last?.failoverMs} ms` +
            (last?.cleanedMs !== undefined ? `, returning host cleaned after ${last.cleanedMs} ms` : ""),
        );
        await Bun.sleep(100);
      }
    }
    const failoverEnded = now();

    // --- 2. scale: BULK associations on hv3 ----------------------------------------------------
    log(`recording ${BULK} VM allocations and ${BULK} EIPs for hv3`);
    const base = 192 * 2 ** 24 + 168 * 2 ** 16 + 96 * 2 ** 8;
    const ipOf = (i: number) => {
      const n = base + 2 + i; // .0 is the network, .1 the gateway
      return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
    };
    for (const [i, name] of bulkNames.entries()) {
      await must("POST", "/api/v1/ip/allocate", { vm_id: name, ip: ipOf(i), host: "hv3", pool: "bulkvms" });
    }
    const bulkEips: string[] = [];
    for (let i = 0; i < BULK; i++) {
      bulkEips.push(((await must("POST", "/elastic-ips", { pool: "bulkeips" })).body as { id: string }).id);
    }
    // What one virsh call costs the test driver with all the domains in the file, and with one.
    const virsh = async (domains: number): Promise<number> => {
      bed.setBareDomains(
        "hv3",
        bulkNames.slice(0, domains).map((name) => ({ name })),
      );
      const ms: number[] = [];
      for (let i = 0; i < 3; i++) {
        const started = now();
        const result = await bed.hostExec("hv3", ["virsh", "-c", bed.host("hv3").libvirtUri, "domstate", "bulk-0001"]);
        if (result.code !== 0) throw new Error(`virsh domstate: ${result.stderr}`);
        ms.push(now() - started);
      }
      return percentile(ms, 50);
    };
    const virshAll = await virsh(BULK);
    const virshOne = await virsh(1);
    log(`test driver: virsh domstate with ${BULK} domains ${fmt(virshAll)} ms, with 1 ${fmt(virshOne)} ms`);
    log(
      `associating ${BULK} EIPs on hv3, one after another: #1–${WINDOW} and #${BULK - WINDOW + 1}–${BULK} paced ${PACE_MS} ms apart, the rest back to back`,
    );
    const associateMs: number[] = [];
    let associateErrors = 0;
    const associate = async (i: number, paced: boolean) => {
      const name = bulkNames[i] as string;
      bed.setBareDomains("hv3", [{ name }]);
      const response = await call("POST", `/elastic-ips/${bulkEips[i]}/associate`, { instance_id: name });
      if (response.status !== 200) {
        associateErrors++;
        log(`  associate ${i + 1}: ${response.status} ${JSON.stringify(response.body)}`);
      }
      associateMs.push(round(response.ms));
      if ((i + 1) % 100 === 0) log(`  ${i + 1}: last 100 p50 ${fmt(percentile(associateMs.slice(-100), 50))} ms`);
      if (paced) await Bun.sleep(Math.max(0, PACE_MS - response.ms));
    };
    // What reading hv3's ippool table costs (every association reads it first), run directly on the host.
    const readTable = async (): Promise<number> => {
      const ms: number[] = [];
      for (let i = 0; i < 3; i++) {
        const started = now();
        await bed.hostExec("hv3", ["nft", "-j", "list", "table", "ip", "ippool"]);
        ms.push(now() - started);
      }
      return percentile(ms, 50);
    };
    await associate(0, true);
    const readTableOne = await readTable();
    for (let i = 1; i < WINDOW; i++) await associate(i, true);
    const fillStarted = now();
    for (let i = WINDOW; i < BULK - WINDOW; i++) await associate(i, false);
    const fillS = (now() - fillStarted) / 1000;
    await Bun.sleep(ARP_DRAIN_MS);
    for (let i = BULK - WINDOW; i < BULK; i++) await associate(i, true);
    await Bun.sleep(ARP_DRAIN_MS);
    const hv3Elements = (await bed.hostExec("hv3", ["nft", "-j", "list", "map", "ip", "ippool", "eip_dnat"])).stdout;
    const onHost = countElements(hv3Elements || "{}");
    const readTableAll = await readTable();
    log(`disassociating ${WINDOW} at ${BULK} associations`);
    const disassociateMs: number[] = [];
    let disassociateErrors = 0;
    for (const id of bulkEips.slice(-WINDOW).reverse()) {
      const response = await call("POST", `/elastic-ips/${id}/disassociate`);
      if (response.status !== 200) disassociateErrors++;
      disassociateMs.push(round(response.ms));
    }

    // --- report --------------------------------------------------------------------------------
    const ok = (m: Move) => m.status === 200 && m.failoverMs !== null;
    const row = (label: string, count: string, s: { p50: number; p95: number; max: number }, note = "") =>
      `  ${label.padEnd(40)} ${count.padStart(9)} ${fmt(s.p50).padStart(8)} ${fmt(s.p95).padStart(8)} ${fmt(s.max).padStart(8)}${note}`;
    const out: string[] = [];
    out.push("7. Elastic IP failover and association: dist/ippool in the network-namespace testbed");
    out.push("  (real sshd, nftables and libvirt's test driver on the fake hosts; requests over the Unix socket)");
    out.push("  failover = associate with allow_reassociation sent → first answer from the new VM to a UDP probe");
    out.push(`  from the uplink every ~1 ms, started ${PROBE_LEAD_MS} ms before the request; fo-a@hv1 ⇄ fo-b@hv2`);
    out.push(
      `  ${"".padEnd(40)} ${"n".padStart(9)} ${"p50 ms".padStart(8)} ${"p95 ms".padStart(8)} ${"max ms".padStart(8)}`,
    );
    const movesSummary: Record<string, unknown> = {};
    const failures: string[] = [];
    for (const oldHost of ["reachable", "down"] as const) {
      const set = moves.filter((m) => m.oldHost === oldHost);
      const good = set.filter(ok);
      const failover = stats(good.map((m) => m.failoverMs as number));
      const request = stats(good.map((m) => m.requestMs));
      const count = `${good.length}/${set.length}`;
      out.push(row(`old host ${oldHost}: failover`, count, failover));
      out.push(row(`old host ${oldHost}: associate request`, count, request));
      const summary: Record<string, unknown> = { moves: set.length, ok: good.length, failover, request };
      if (oldHost === "down") {
        const back = set.map((m) => m.cleanedMs).filter((ms): ms is number => typeof ms === "number");
        summary.returning_host_cleaned = stats(back);
        out.push(
          row("  host back up → its stale rule removed", `${back.length}/${set.length}`, stats(back), " (reconnect)"),
        );
      }
      if (good.length < set.length) failures.push(`${set.length - good.length} moves with the old host ${oldHost}`);
      movesSummary[oldHost] = summary;
    }
    const p50s = (["reachable", "down"] as const).map((h) => {
      const p50 = percentile(
        moves.filter((m) => m.oldHost === h && ok(m)).map((m) => m.failoverMs as number),
        50,
      );
      return `${h} ${fmt(p50)} ms ${p50 < 100 ? "met" : "NOT met"}`;
    });
    out.push(`  target failover p50 < 100 ms: ${p50s.join(", ")}`);
    const early = stats(associateMs.slice(0, WINDOW));
    const fill = stats(associateMs.slice(WINDOW, BULK - WINDOW));
    const late = stats(associateMs.slice(-WINDOW));
    const off = stats(disassociateMs);
    out.push(
      `  ${BULK} EIPs associated on hv3 one after another (request after answer); ${onHost} DNAT elements on hv3 after`,
    );
    out.push(
      `  (nft -j list table ip ippool on hv3, run directly: ${fmt(readTableOne)} ms with 1 association, ${fmt(readTableAll)} ms with ${onHost})`,
    );
    out.push(
      `  (hv3's node file holds only the domain being associated: the test driver's virsh domstate takes ${fmt(virshAll)} ms`,
    );
    out.push(
      `  with all ${BULK} in it vs ${fmt(virshOne)} ms with one: it parses the whole file per call; libvirtd keeps domains in memory)`,
    );
    out.push(row(`associate #1–${WINDOW}, paced ${PACE_MS} ms`, String(early.count), early));
    out.push(
      row(
        `associate #${WINDOW + 1}–${BULK - WINDOW}, back to back`,
        String(fill.count),
        fill,
        ` (${(fill.count / fillS).toFixed(1)}/s)`,
      ),
    );
    out.push(row(`associate #${BULK - WINDOW + 1}–${BULK}, paced ${PACE_MS} ms`, String(late.count), late));
    out.push(row(`disassociate at ${BULK}→${BULK - WINDOW + 1} associations`, String(off.count), off));
    out.push(
      `  associate #${BULK - WINDOW + 1}–${BULK} / #1–${WINDOW} (paced): p50 ${(late.p50 / early.p50).toFixed(2)}, p95 ${(late.p95 / early.p95).toFixed(2)}; ` +
        `back to back, ${associateMs.slice(WINDOW, BULK - WINDOW).filter((ms) => ms > 2 * fill.p50).length} of ${fill.count} took over twice their p50`,
    );
    if (associateErrors + disassociateErrors > 0) {
      failures.push(`${associateErrors} associations and ${disassociateErrors} disassociations`);
    }
    for (const failure of failures) out.push(`  WARNING: ${failure} failed (see ${values.raw})`);
    out.push(
      `  section wall time ${((now() - began) / 1000).toFixed(0)} s (testbed and failover ${((failoverEnded - began) / 1000).toFixed(0)} s); raw samples in ${values.raw}`,
    );
    process.stdout.write(`${out.join("\n")}\n`);

    mkdirSync(dirname(values.raw), { recursive: true });
    writeFileSync(
      values.raw,
      `${JSON.stringify(
        {
          when: new Date().toISOString(),
          moves_per_case: MOVES,
          bulk: BULK,
          probe_lead_ms: PROBE_LEAD_MS,
          summary: {
            moves: movesSummary,
            associate_first_paced: early,
            associate_last_paced: late,
            disassociate: off,
            associate_fill: { ...fill, per_second: round(fill.count / fillS) },
            pace_ms: PACE_MS,
            nft_list_table_ms: { one: round(readTableOne), all: round(readTableAll) },
            test_driver_virsh_ms: { all_domains: round(virshAll), one_domain: round(virshOne) },
          },
          moves,
          associate_ms: associateMs,
          disassociate_ms: disassociateMs,
        },
        null,
        1,
      )}\n`,
    );
  } catch (error) {
    if (daemon) process.stderr.write(`daemon logs (tail):\n${daemon.logs.split("\n").slice(-40).join("\n")}\n`);
    throw error;
  } finally {
    if (process.env.SHOW_DAEMON_LOGS && daemon) process.stderr.write(daemon.logs);
    await daemon?.dispose();
    await bed.destroy();
  }
}

/** Elements of `nft -j list map` output. */
function countElements(json: string): number {
  const parsed = JSON.parse(json) as { nftables?: { map?: { elem?: unknown[] } }[] };
  return parsed.nftables?.reduce((n, item) => n + (item.map?.elem?.length ?? 0), 0) ?? 0;
}

await main();
