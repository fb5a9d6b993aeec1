/**
 * This daemon's row in the fleet's `daemons` table: its heartbeat (which keeps its pages its own,
 * pages.ts) and which process it is. Two daemons given one name (hosts cloned from one image keep
 * their host name, the default name) would take each other's pages at every claim and both hold
 * the singleton jobs' leases, and nothing would say so. So a daemon does not start under a name
 * another live process holds, and one whose name is taken while it runs (two started at once) is
 * told, and stops heartbeating.
 */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Sql } from "postgres";
import { DaemonNameTakenError } from "./errors.ts";

/** Which process holds a daemon's name: its host, that host's boot, and its pid. */
interface Instance {
  readonly host: string;
  readonly boot: string;
  readonly pid: number;
}

function thisInstance(): Instance {
  let boot = "";
  try {
    boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    // Not Linux: a restart on the same host then waits a heartbeat to tell itself from a twin.
  }
  return { host: hostname(), boot, pid: process.pid };
}

/** The same process (the row's text is written from `thisInstance` alone, in this key order). */
const instanceText = (instance: Instance) => JSON.stringify(instance);

function describe(text: string | null): string {
  if (text === null) return "a daemon of an older ippool";
  const { host, pid } = JSON.parse(text) as Instance;
  return `pid ${pid} on ${host}`;
}

/** A process that has exited on this host since this boot: this daemon's own, before a restart. */
function isGoneFromThisHost(text: string | null, self: Instance): boolean {
  if (text === null) return false;
  const holder = JSON.parse(text) as Instance;
  if (holder.host !== self.host || holder.boot !== self.boot || self.boot === "") return false;
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export class Membership {
  private readonly self = thisInstance();
  private registering: Promise<void> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  /** Called once, when another process has registered under this daemon's name (`join` sets it). */
  private onNameTaken: (message: string) => void = () => {};

  constructor(
    private sql: Sql,
    readonly daemon: string,
    /** Seconds its pages stay its own after its last heartbeat (pages.ts). */
    readonly leaseSeconds: number,
  ) {}

  /** Heartbeats go over `sql` from now on (the store replaced a connection gone silent). */
  useConnection(sql: Sql): void {
    this.sql = sql;
  }

  /**
   * Takes this daemon's name at its start, refusing (DaemonNameTakenError) when another live
   * process holds it. A holder whose heartbeat is fresh is this daemon before a restart when its
   * process is gone from this host; otherwise it is watched for one heartbeat's interval, and a
   * heartbeat in that time means it is alive. `onNameTaken` is told if the name is taken later.
   */
  async join(onNameTaken: (message: string) => void): Promise<void> {
    this.onNameTaken = onNameTaken;
    const holder = await this.liveHolder();
    if (holder !== undefined && !isGoneFromThisHost(holder.instance, this.self)) {
      await sleep(this.beatIntervalMs() + 1000);
      const now = await this.liveHolder();
      if (now !== undefined && (now.instance !== holder.instance || now.beat > holder.beat)) {
        throw new DaemonNameTakenError(
          `another live daemon runs as ${JSON.stringify(this.daemon)} (${describe(now.instance)}): give each daemon its own [store] daemon`,
        );
      }
    }
    await this.register();
  }

  private async liveHolder(): Promise<{ instance: string | null; beat: number } | undefined> {
    const [row] = await this.sql<{ instance: string | null; beat: number }[]>`
      SELECT instance, extract(epoch FROM heartbeat_at)::float8 AS beat FROM daemons
      WHERE id = ${this.daemon} AND heartbeat_at > now() - make_interval(secs => ${this.leaseSeconds})`;
    return row;
  }

  /** Enters this daemon in the fleet's table as this process (once), and starts its heartbeat. */
  register(): Promise<void> {
    this.registering ??= (async () => {
      await this.sql`
        INSERT INTO daemons (id, epoch, heartbeat_at, instance) VALUES (${this.daemon}, 1, now(), ${instanceText(this.self)})
        ON CONFLICT (id) DO UPDATE SET epoch = daemons.epoch + 1, heartbeat_at = now(), instance = excluded.instance`;
      this.heartbeat = setInterval(() => void this.beat(), this.beatIntervalMs());
      this.heartbeat.unref?.();
    })().catch((error) => {
      this.registering = undefined;
      throw error;
    });
    return this.registering;
  }

  /** A third of the lease: two heartbeats can be lost before the daemon's pages may be taken. */
  private beatIntervalMs(): number {
    return (this.leaseSeconds * 1000) / 3;
  }

  /** A missed heartbeat (the database out of reach) is not fatal: the next one may arrive in time. */
  private async beat(): Promise<void> {
    try {
      const beaten = await this.sql`
        UPDATE daemons SET heartbeat_at = now() WHERE id = ${this.daemon} AND instance = ${instanceText(this.self)}
        RETURNING 1`;
      if (beaten.length > 0 || this.heartbeat === undefined) return;
      const [row] = await this.sql<
        { instance: string | null }[]
      >`SELECT instance FROM daemons WHERE id = ${this.daemon}`;
      this.stop();
      if (row === undefined) {
        // Deleted by hand: the next claim enters this daemon again (its pages' owner must exist).
        this.registering = undefined;
        return;
      }
      this.onNameTaken(
        `another daemon has registered as ${JSON.stringify(this.daemon)} (${describe(row.instance)}): give each daemon its own [store] daemon`,
      );
    } catch {}
  }

  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }
}
