/**
 * The pages of each pool this daemon holds (docs/FLEET.md, "Pages, owned and fenced"). A daemon
 * takes new addresses from its own pages, so the fleet's daemons do not wait for one another on
 * one page's row lock; it claims a page when none of its own has a free address left.
 *
 * A claim sets the page's owner and adds one to its epoch, in a statement of its own (committed at
 * once, whatever the claiming transaction does). The daemon keeps the epoch, and every write of the
 * page's bits it makes as the page's holder is fenced by it (writes.ts): a daemon that was paused
 * or cut off past its lease, whose pages another daemon has since claimed, has its writes refused,
 * drops the page and runs the step again on pages it still holds.
 *
 * Ownership only decides who waits and who runs a step again; it never decides correctness. Each
 * transaction reads a page's bits under its row lock, and the schema refuses one address twice.
 */
import type { Sql } from "postgres";
import type { Membership } from "./membership.ts";

/** The lease when none is configured (`[store] lease_s`). */
export const DEFAULT_LEASE_S = 15;

/** Why a page was claimed, for the daemon's metrics. */
export type ClaimKind = "free" | "own" | "stale";

export interface PageHolding {
  /** The pages of `pool` this daemon holds, with the epoch of its claim of each. */
  held(pool: string): ReadonlyMap<number, number> | undefined;
  /** Changes whenever the pages of `pool` held change: a claim made for one holding is not asked for again. */
  generation(pool: string): number;
}

export interface PageClaimStats {
  /** Claims made, by what the page was before: unowned, this daemon's (from before a restart), or a stale daemon's. */
  readonly claims: Record<ClaimKind, number>;
  /** Claims that found no page to take (the daemon then allocates from any page with a free address). */
  readonly claimsFindingNone: number;
  /** Writes refused because the page had been claimed by another daemon. */
  readonly fenced: number;
  /** Pages held, by pool. */
  readonly held: ReadonlyMap<string, number>;
}

/** The SQLSTATE a fenced page write raises when the page is no longer this daemon's (schema.ts, v4). */
export const PAGE_TAKEN_STATE = "IPP01";

/**
 * A fenced write of a page found it held by another daemon (or claimed again): the transaction
 * is rolled back, the page dropped, and the steps run again (store.ts). Never answered to a client.
 */
export class PageTakenError extends Error {
  constructor(
    readonly pool: string,
    readonly page: number,
  ) {
    super(`page ${page} of pool ${pool} was claimed by another daemon`);
  }
}

export class PageClaims implements PageHolding {
  /** The pages this daemon holds with room, by pool: index → the epoch it claimed each at. */
  private readonly pages = new Map<string, Map<number, number>>();
  /**
   * The pages it holds that it filled: still its own in the database, but set aside, so that what
   * a batch's planning walks is the pages it can allocate from, not every page it ever filled.
   */
  private readonly filled = new Map<string, Map<number, number>>();
  private readonly generations = new Map<string, number>();
  private readonly counts = { claims: { free: 0, own: 0, stale: 0 }, claimsFindingNone: 0, fenced: 0 };

  constructor(
    private sql: Sql,
    private readonly membership: Membership,
  ) {}

  private get daemon(): string {
    return this.membership.daemon;
  }

  private get leaseSeconds(): number {
    return this.membership.leaseSeconds;
  }

  /** Claims and heartbeats go over `sql` from now on: the store replaced a connection gone silent. */
  useConnection(sql: Sql): void {
    this.sql = sql;
    this.membership.useConnection(sql);
  }

  held(pool: string): ReadonlyMap<number, number> | undefined {
    return this.pages.get(pool);
  }

  generation(pool: string): number {
    return this.generations.get(pool) ?? 0;
  }

  stats(): PageClaimStats {
    return {
      claims: { ...this.counts.claims },
      claimsFindingNone: this.counts.claimsFindingNone,
      fenced: this.counts.fenced,
      held: new Map([...this.pages].map(([pool, pages]) => [pool, pages.size])),
    };
  }

  /**
   * Claims a page of `pool` with a free address: first one this daemon held before it restarted,
   * then one nobody holds, then one whose holder's heartbeat is older than the lease. Rows another
   * transaction has locked are passed over, so a claim never waits. Resolves to the page claimed,
   * or undefined when there is none to take.
   */
  async claim(pool: string): Promise<number | undefined> {
    await this.membership.register();
    const [row] = await this.sql<{ page: number; epoch: number; kind: ClaimKind }[]>`
      WITH candidate AS (
        SELECT p.pool, p.page,
               CASE WHEN p.owner = ${this.daemon} THEN 'own' WHEN p.owner IS NULL THEN 'free' ELSE 'stale' END AS kind
        FROM pool_pages p LEFT JOIN daemons d ON d.id = p.owner
        WHERE p.pool = ${pool} AND NOT p.filled
          AND (p.owner IS NULL OR p.owner = ${this.daemon}
               OR d.heartbeat_at < now() - make_interval(secs => ${this.leaseSeconds}))
        ORDER BY p.owner IS DISTINCT FROM ${this.daemon}, p.owner IS NOT NULL, p.page
        LIMIT 1
        FOR UPDATE OF p SKIP LOCKED)
      UPDATE pool_pages SET owner = ${this.daemon}, epoch = pool_pages.epoch + 1
      FROM candidate WHERE pool_pages.pool = candidate.pool AND pool_pages.page = candidate.page
      RETURNING pool_pages.page, pool_pages.epoch, candidate.kind`;
    if (!row) {
      this.counts.claimsFindingNone++;
      return undefined;
    }
    this.counts.claims[row.kind]++;
    this.generations.set(pool, this.generation(pool) + 1);
    this.filled.get(pool)?.delete(row.page);
    pagesOf(this.pages, pool).set(row.page, row.epoch);
    return row.page;
  }

  /** A write of the page was refused: another daemon holds it now. */
  fencedOut(pool: string, page: number): void {
    this.counts.fenced++;
    this.pages.get(pool)?.delete(page);
    this.filled.get(pool)?.delete(page);
    this.generations.set(pool, this.generation(pool) + 1);
  }

  /**
   * Follows a page's flag as this daemon last committed or read it: a held page now full is set
   * aside, and one set aside with room again (this daemon released an address on it) is held again
   * at the epoch it was claimed at. A page set aside that another daemon frees is taken back by the
   * next claim, which looks at this daemon's own pages first.
   */
  follow(pool: string, page: number, full: boolean): void {
    const [from, to] = full ? [this.pages, this.filled] : [this.filled, this.pages];
    const epoch = from.get(pool)?.get(page);
    if (epoch === undefined) return;
    from.get(pool)?.delete(page);
    pagesOf(to, pool).set(page, epoch);
    this.generations.set(pool, this.generation(pool) + 1);
  }

  stop(): void {
    this.membership.stop();
  }
}

/** The pages of `pool` in `byPool`, an empty map put there first if it has none. */
function pagesOf(byPool: Map<string, Map<number, number>>, pool: string): Map<number, number> {
  let pages = byPool.get(pool);
  if (pages === undefined) {
    pages = new Map();
    byPool.set(pool, pages);
  }
  return pages;
}
