/**
 * The testbed half of the crash loop (`crash-loop.ts --hosts`): EIP associations with VMs on
 * real hosts (network namespaces with OpenSSH, libvirt's test driver and nftables), driven
 * alongside the pool traffic and checked after every restart.
 *
 * During traffic, one association request at a time touches an EIP and the instances it leaves
 * and joins (the model marks them busy), so every acknowledged answer is predictable. After a
 * restart: each EIP is recorded associated with the instance of its last acknowledged change (an
 * association or disassociation in flight at the kill leaves either the old or the new one), no
 * instance has two EIPs, and once reconciliation has run on every host, each host's `table ip
 * ippool` maps and EIP /32s are exactly the recorded associations of its VMs; and each associated
 * EIP, probed from the uplink, reaches its VM.
 */

import type { ConfigSpec } from "../support/config-toml.ts";
import type { Daemon } from "../support/daemon.ts";
import type { Testbed, TestbedOptions, TestbedVm } from "../support/testbed.ts";
import { disagreements, hostMetrics } from "./host-state.ts";

/** Two hosts; hv2 also has a paused VM, whose associations are refused. */
export const TESTBED: TestbedOptions = {
  hosts: [
    { name: "hv1", vms: [{ name: "guest-11" }, { name: "guest-12" }, { name: "guest-13" }] },
    {
      name: "hv2",
      vms: [{ name: "guest-21" }, { name: "guest-22" }, { name: "guest-23" }, { name: "guest-24", state: "paused" }],
    },
  ],
};
/** How long hosts may take to connect and agree with the records after a restart. */
const CONVERGE_DEADLINE_MS = 30_000;

/** What the loop keeps per EIP that this half reads and updates. */
export interface AssociableEip {
  busy: boolean;
  state: { kind: "held"; ip: string } | { kind: "free" } | { kind: "unknown" };
  /**
   * Instances the EIP may be recorded associated with (null: none). One while the last change
   * was acknowledged; the old and the new one after a change in flight at a kill.
   */
  instances: readonly (string | null)[];
}

/** An EIP as the project's list shows it. */
export interface ListedEip {
  readonly id: string;
  readonly public_ip: string;
  readonly state: string;
  readonly instance_id?: string;
  readonly host?: string;
  readonly private_ip?: string;
}

/** What the traffic of one trial offers an association request. */
export interface Traffic {
  readonly daemon: Daemon;
  random(): number;
  pick<T>(items: readonly T[]): T;
  violation(what: string): void;
  killed(): boolean;
  /** Counts a request that was in flight at the kill (its answer never came). */
  lost(): void;
  /** Counts a request sent. */
  sent(): void;
  /** Counts an answer. */
  answered(): void;
}

export interface AssociationCounts {
  /** Associate and disassociate requests sent. */
  associationRequests: number;
  /** Of those, answered (the rest were in flight at a kill). */
  associationsAcknowledged: number;
  /** Acknowledged association states (associated or not) asserted against the records after restarts. */
  associationsChecked: number;
  /** (host, EIP) mappings found on the hosts exactly as recorded. */
  hostMappingsChecked: number;
  /** Associations raced by a release of the same EIP (exactly one of the two may win). */
  racedReleases: number;
  /** Of those, races the release won (the association answered NOT_FOUND). */
  releasesWon: number;
  /** Kills while at least one association request was in flight. */
  killsDuringAssociation: number;
  /** Checks where the hosts still disagreed after the first reconciliation run and agreed later. */
  lateConvergences: number;
  /** Associated EIPs probed from the uplink after checks (each reached its VM, or a violation was counted). */
  probes: number;
  /** The longest a probed EIP took to answer (a stale neighbour entry upstream shows as seconds here). */
  slowestProbeMs: number;
}

export function associationCounts(): AssociationCounts {
  return {
    associationRequests: 0,
    associationsAcknowledged: 0,
    associationsChecked: 0,
    hostMappingsChecked: 0,
    racedReleases: 0,
    releasesWon: 0,
    killsDuringAssociation: 0,
    lateConvergences: 0,
    probes: 0,
    slowestProbeMs: 0,
  };
}

export class HostedAssociations {
  /** Instances an association request in flight touches. */
  private readonly busy = new Set<string>();
  /** Association requests in flight. */
  inFlight = 0;

  constructor(
    readonly bed: Testbed,
    readonly counts: AssociationCounts,
  ) {}

  /** The loop's own config with what this half adds: the guests' pool, one-second reconciliation, the hosts. */
  config(own: ConfigSpec): ConfigSpec {
    return {
      ...own,
      pools: [...(own.pools ?? []), { name: "guests", cidr: "192.168.100.0/24", gateway: "192.168.100.1" }],
      reconcileIntervalS: 1,
      hosts: this.bed.hostSpecs({ connectTimeoutMs: 3000, commandTimeoutMs: 15_000 }),
    };
  }

  private vms(): TestbedVm[] {
    return this.bed.hosts.flatMap((h) => h.vms);
  }

  /** What the libvirt hook does at VM start: records each guest's address and host. */
  async registerGuests(d: Daemon): Promise<void> {
    for (const vm of this.vms()) {
      const body = { vm_id: vm.name, ip: vm.privateIp, host: vm.host, pool: "guests" };
      const { status } = await d.post("/api/v1/ip/allocate", body, "unix");
      if (status !== 201 && status !== 200) throw new Error(`registering ${vm.name} answered ${status}`);
    }
  }

  /** Waits until every host is connected and has been reconciled once by this daemon. */
  async ready(d: Daemon): Promise<void> {
    const deadline = Date.now() + CONVERGE_DEADLINE_MS;
    for (;;) {
      const { up, runs } = await hostMetrics(d);
      if (this.bed.hosts.every((h) => up.get(h.name) === 1 && (runs.get(h.name) ?? 0) >= 1)) return;
      if (Date.now() > deadline) {
        throw new Error(`hosts not connected and reconciled within ${CONVERGE_DEADLINE_MS} ms:\n${d.logs}`);
      }
      await Bun.sleep(25);
    }
  }

  /** One associate (to a random VM, with or without allow_reassociation) or disassociate request. */
  async op(t: Traffic, eips: ReadonlyMap<string, AssociableEip>): Promise<void> {
    const idle = [...eips].filter(([, e]) => !e.busy && e.state.kind === "held");
    const targets = this.vms().filter((vm) => !this.busy.has(vm.name));
    if (idle.length === 0 || targets.length === 0) return void (await Bun.sleep(1));
    const [id, entry] = t.pick(idle);
    const current = entry.instances[0] ?? null;
    if (current !== null && this.busy.has(current)) return void (await Bun.sleep(1));
    const target = current !== null && t.random() < 0.3 ? null : t.pick(targets);
    const allow = t.random() < 0.5;
    const expected = target === null ? undefined : this.expectedRefusal(id, current, target, allow, eips);
    const race = current === null && target !== null && expected === undefined && t.random() < 0.15;
    const touched = [current, target?.name ?? null].filter((name): name is string => name !== null);
    entry.busy = true;
    for (const name of touched) this.busy.add(name);
    this.inFlight++;
    this.counts.associationRequests++;
    t.sent();
    try {
      if (race) return await this.raceRelease(t, id, entry, target);
      const answer =
        target === null
          ? await this.call(t.daemon, `/elastic-ips/${id}/disassociate`, undefined)
          : await this.call(t.daemon, `/elastic-ips/${id}/associate`, {
              instance_id: target.name,
              ...(allow ? { allow_reassociation: true } : {}),
            });
      this.counts.associationsAcknowledged++;
      t.answered();
      const what = target === null ? `disassociate ${id} (from ${current})` : `associate ${id} with ${target.name}`;
      entry.instances = [this.judge(t, what, answer, entry, current, target, expected)];
    } catch (error) {
      entry.instances = [...new Set([current, target?.name ?? null])];
      if (!t.killed()) t.violation(`association request for ${id} failed before the kill: ${error}`);
      else t.lost();
    } finally {
      entry.busy = false;
      for (const name of touched) this.busy.delete(name);
      this.inFlight--;
    }
  }

  /**
   * Associates an unassociated EIP and releases it a moment later, while the association is
   * being applied: either the association wins (the release answers STILL_ASSOCIATED) or the
   * release does (the association answers NOT_FOUND and must not bring the EIP back).
   */
  private async raceRelease(t: Traffic, id: string, entry: AssociableEip, target: TestbedVm): Promise<void> {
    this.counts.racedReleases++;
    const associating = this.call(t.daemon, `/elastic-ips/${id}/associate`, { instance_id: target.name });
    associating.catch(() => {}); // a kill during the pause below is judged with the release, not unhandled
    await Bun.sleep(Math.floor(t.random() * 30));
    t.sent();
    const releasing = this.call(t.daemon, `/elastic-ips/${id}`, undefined, "DELETE");
    const [association, release] = await Promise.allSettled([associating, releasing]);
    const a = association.status === "fulfilled" ? association.value : null;
    const r = release.status === "fulfilled" ? release.value : null;
    if (a) this.counts.associationsAcknowledged++;
    for (const answer of [a, r]) if (answer) t.answered();
    if (!a || !r) {
      if (!t.killed()) t.violation(`associate ${id} racing its release: a request failed before the kill`);
      else for (const answer of [a, r]) if (!answer) t.lost();
    }
    const associationWon = a?.status === 200 || r?.status === 409;
    const releaseWon = r?.status === 200 || a?.status === 404;
    const odd =
      (a && a.status !== 200 && !(a.status === 404 && a.body.code === "NOT_FOUND")) ||
      (r && r.status !== 200 && !(r.status === 409 && r.body.code === "STILL_ASSOCIATED"));
    if (odd || (associationWon && releaseWon)) {
      const shown = (x: typeof a) => (x ? `${x.status} ${JSON.stringify(x.body)}` : "no answer");
      t.violation(`associate ${id} with ${target.name} racing its release: ${shown(a)}; release ${shown(r)}`);
      entry.state = { kind: "unknown" };
      entry.instances = [null, target.name];
    } else if (associationWon) {
      if (a) this.judge(t, `associate ${id} with ${target.name} racing its release`, a, entry, null, target, undefined);
      entry.instances = [target.name];
    } else if (releaseWon) {
      this.counts.releasesWon++;
      entry.state = { kind: "free" };
      entry.instances = [null];
    } else {
      // Both were in flight at the kill.
      entry.state = { kind: "unknown" };
      entry.instances = [null, target.name];
    }
  }

  private call(d: Daemon, path: string, body: unknown, method = "POST") {
    return d.json(path, {
      method,
      via: "unix",
      headers: { "content-type": "application/json", "x-project": "crash" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  }

  /** The refusal code the daemon must answer, in the order it checks; undefined when it must succeed. */
  private expectedRefusal(
    id: string,
    current: string | null,
    target: TestbedVm,
    allow: boolean,
    eips: ReadonlyMap<string, AssociableEip>,
  ): string | undefined {
    if (current === target.name) return undefined;
    if (current !== null && !allow) return "ALREADY_ASSOCIATED";
    const holder = [...eips].find(([other, e]) => other !== id && e.instances[0] === target.name);
    if (holder) return "INSTANCE_HAS_EIP";
    if (target.state !== "running") return "INSTANCE_NOT_RUNNING";
    return undefined;
  }

  /** Checks an answer against the model; returns the instance the EIP is now associated with. */
  private judge(
    t: Traffic,
    what: string,
    // biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field
    answer: { status: number; body: any },
    entry: AssociableEip,
    current: string | null,
    target: TestbedVm | null,
    expected: string | undefined,
  ): string | null {
    const { status, body } = answer;
    const shown = `${status} ${JSON.stringify(body)}`;
    if (target === null) {
      if (status === 200 && body.state === "allocated" && body.instance_id === undefined) return null;
      t.violation(`${what} answered ${shown}`);
      return current;
    }
    if (expected !== undefined) {
      if (status !== 409 || body.code !== expected) t.violation(`${what}: expected 409 ${expected}, got ${shown}`);
      return current;
    }
    const ip = entry.state.kind === "held" ? entry.state.ip : undefined;
    const right =
      status === 200 &&
      body.state === "associated" &&
      body.instance_id === target.name &&
      body.host === target.host &&
      body.private_ip === target.privateIp &&
      body.public_ip === ip;
    if (right) return target.name;
    t.violation(`${what} (from ${current}) answered ${shown}`);
    return current;
  }

  /**
   * After a restart: the recorded associations against the model, then (once reconciliation has
   * run) the hosts against the records. Re-syncs the model to the records.
   */
  async check(
    d: Daemon,
    listed: readonly ListedEip[],
    eips: ReadonlyMap<string, AssociableEip>,
    violation: (what: string) => void,
  ): Promise<void> {
    const byInstance = new Map<string, string>();
    for (const record of listed) {
      const instance = record.instance_id ?? null;
      const entry = eips.get(record.id);
      if (entry && entry.instances.length === 1) this.counts.associationsChecked++;
      if (entry && !entry.instances.includes(instance)) {
        const expected = entry.instances.map((i) => i ?? "nothing").join(" or ");
        violation(`EIP ${record.id}: recorded associated with ${instance ?? "nothing"}, acknowledged ${expected}`);
      }
      if (!entry && instance !== null) violation(`EIP ${record.id} appeared already associated with ${instance}`);
      if (entry) entry.instances = [instance];
      if (instance === null) {
        if (record.state !== "allocated" || record.host !== undefined || record.private_ip !== undefined)
          violation(`EIP ${record.id}: no instance but ${JSON.stringify(record)}`);
        continue;
      }
      const other = byInstance.get(instance);
      if (other !== undefined) violation(`${instance} has two EIPs: ${other} and ${record.id}`);
      byInstance.set(instance, record.id);
      const vm = this.vms().find((v) => v.name === instance);
      if (record.state !== "associated" || record.host !== vm?.host || record.private_ip !== vm?.privateIp)
        violation(
          `EIP ${record.id}: recorded ${JSON.stringify(record)}, ${instance} is ${vm?.privateIp} on ${vm?.host}`,
        );
    }
    await this.checkHosts(d, listed, violation);
    for (const record of listed) if (record.instance_id !== undefined) await this.probe(record, violation);
  }

  /**
   * Compares the hosts with the records. The restarted daemon has reconciled every host once
   * (`ready`); if they still disagree, waits for further runs until a deadline, which is a violation.
   */
  private async checkHosts(d: Daemon, listed: readonly ListedEip[], violation: (what: string) => void): Promise<void> {
    const deadline = Date.now() + CONVERGE_DEADLINE_MS;
    let problems = await disagreements(this.bed, listed);
    if (problems.length > 0) this.counts.lateConvergences++;
    while (problems.length > 0 && Date.now() < deadline) {
      // Two more runs per host: the second one started after the comparison above.
      const { runs } = await hostMetrics(d);
      while (Date.now() < deadline) {
        const now = (await hostMetrics(d)).runs;
        if (this.bed.hosts.every((h) => (now.get(h.name) ?? 0) >= (runs.get(h.name) ?? 0) + 2)) break;
        await Bun.sleep(50);
      }
      problems = await disagreements(this.bed, listed);
    }
    for (const problem of problems)
      violation(`hosts disagree with the records ${CONVERGE_DEADLINE_MS} ms after reconciling: ${problem}`);
    if (problems.length === 0) this.counts.hostMappingsChecked += listed.filter((r) => r.host !== undefined).length;
  }

  private async probe(record: ListedEip, violation: (what: string) => void): Promise<void> {
    this.counts.probes++;
    try {
      const ms = await this.bed.probeUntil(record.public_ip, record.instance_id as string, 10_000);
      this.counts.slowestProbeMs = Math.max(this.counts.slowestProbeMs, Math.round(ms));
    } catch (error) {
      violation(`EIP ${record.public_ip} does not reach ${record.instance_id}: ${(error as Error).message}`);
    }
  }
}
