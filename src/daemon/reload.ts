/**
 * SIGHUP: the config file is read again, with the same flags and environment, and what can change
 * under a running daemon changes at once: projects and their keys, the admin key and
 * `open_pool_api`, hosts, reconciliation and leak settings, log settings. What only a restart can
 * change (listeners, data directory, store, pools, DHCP) keeps its running value, and each such key is
 * named in a warning. A file that does not load changes nothing.
 */
import type { AdminGate } from "../auth/admin.ts";
import type { ProjectDirectory } from "../auth/projects.ts";
import type { Config } from "../config/config.ts";
import type { ReservationResync } from "../dhcp/resync.ts";
import type { EipReconciler } from "../eip/reconcile.ts";
import type { HostRegistry } from "../hosts/index.ts";
import type { Logger } from "../log/logger.ts";
import type { LeakDetector } from "../pool/leaks.ts";
import { adminKeyRequired, warnOfPoolApiDoor } from "./services.ts";

/** What a reload can change, as the daemon runs it. */
export interface ReloadTargets {
  readonly logger: Logger;
  readonly projects: ProjectDirectory;
  readonly adminGate: AdminGate;
  readonly hosts: HostRegistry;
  readonly reconciler: EipReconciler;
  readonly reservationResync: ReservationResync;
  readonly leaks: LeakDetector;
}

/** The config keys only a restart applies, each with the fields of the config that hold it. */
const RESTART_ONLY: readonly (readonly [string, readonly (keyof Config)[]])[] = [
  ["server.listen", ["listen"]],
  ["server.socket", ["socket"]],
  ["server.data_dir", ["dataDir"]],
  ["store", ["store"]],
  ["pools", ["pools", "defaultPool"]],
  ["eip_pools", ["eipPools", "defaultEipPool"]],
  ["dhcp", ["dhcp"]],
];

/**
 * Applies `next` over `current` and returns the config now in force: `next` for what was applied,
 * `current` for what needs a restart (and for the hosts, if their key files did not check out).
 */
export async function applyReload(current: Config, next: Config, targets: ReloadTargets): Promise<Config> {
  const { logger } = targets;
  const applied: string[] = [];
  let inForce: Config = { ...next };
  for (const [key, fields] of RESTART_ONLY) {
    const kept = Object.fromEntries(fields.map((field) => [field, current[field]])) as Partial<Config>;
    if (fields.some((field) => differs(current[field], next[field]))) {
      logger.warn("reload: needs a restart, not applied", { key });
    }
    inForce = { ...inForce, ...kept };
  }
  if (current.logFormat !== next.logFormat || current.logLevel !== next.logLevel) {
    logger.reconfigure(next.logFormat, next.logLevel);
    applied.push("log");
  }
  if (differs(current.projects, next.projects)) {
    targets.projects.replace(next.projects);
    applied.push("projects");
  }
  if (current.adminKeySha256 !== next.adminKeySha256 || current.openPoolApi !== next.openPoolApi) {
    targets.adminGate.update(next.adminKeySha256, adminKeyRequired(inForce));
    warnOfPoolApiDoor(inForce, logger);
    applied.push("admin key");
  }
  // Asked every time: a key file may have changed under the same settings.
  const hosts = await applyHosts(next, targets);
  if (hosts === null) inForce = { ...inForce, hosts: current.hosts };
  else if (hosts !== "") applied.push(hosts);
  if (current.reconcileIntervalS !== next.reconcileIntervalS) {
    targets.reconciler.schedule(next.reconcileIntervalS);
    targets.reservationResync.start(next.reconcileIntervalS);
    applied.push("reconcile");
  }
  targets.leaks.gracePeriodS = next.leakGracePeriodS;
  const collecting = (config: Config) => (config.hosts.length > 0 ? config.leakCollectIntervalS : 0);
  if (current.leakGracePeriodS !== next.leakGracePeriodS || collecting(current) !== collecting(inForce)) {
    targets.leaks.start(collecting(inForce));
    applied.push("leaks");
  }
  logger.info("reloaded", { applied: applied.length > 0 ? applied.join(",") : "nothing changed" });
  return inForce;
}

/**
 * The hosts' part of a reload as the log names it (`hosts(+hv3,~hv1,-hv2)`: added, changed,
 * removed), "" when no host changed, or null when a key file did not check out (nothing changed).
 */
async function applyHosts(next: Config, targets: ReloadTargets): Promise<string | null> {
  try {
    const { added, changed, removed } = await targets.hosts.update(next.hosts);
    const names = [...added.map((n) => `+${n}`), ...changed.map((n) => `~${n}`), ...removed.map((n) => `-${n}`)];
    return names.length > 0 ? `hosts(${names.join(",")})` : "";
  } catch (error) {
    targets.logger.error("reload: hosts not applied", { error: (error as Error).message });
    return null;
  }
}

function differs(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) !== JSON.stringify(b);
}
