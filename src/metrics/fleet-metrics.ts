/**
 * This daemon's part in a fleet (the shared store, docs/FLEET.md): the pages it holds, its claims
 * of pages, the claims that found none (it then borrows a live daemon's page), its writes refused
 * because a page it held had been taken from it, and how its writes were committed. Read at
 * scrape time.
 */
import { Counter, Gauge, type Registry } from "prom-client";

export interface FleetPageFigures {
  /** Claims made, by what the page was: nobody's, this daemon's from before a restart, a stale daemon's. */
  readonly claims: Readonly<Record<"free" | "own" | "stale", number>>;
  readonly claimsFindingNone: number;
  readonly fenced: number;
  /** Pages held, by pool. */
  readonly held: ReadonlyMap<string, number>;
}

/** How this daemon's write steps were committed (store/postgres/optimistic.ts). */
export interface FleetCommitFigures {
  /** Steps committed in one statement each batch, over the pages this daemon holds. */
  readonly statement: number;
  /** Steps committed in an ordinary transaction (anything but a new allocation, or a plan that could not be made). */
  readonly transaction: number;
  /** Steps that wrote nothing (repeats for VMs that have their address), answered from one read for their batch. */
  readonly unwritten: number;
  /** One-statement commits refused because a page or pool had changed since this daemon read it; planned again. */
  readonly stale: number;
}

export interface FleetMetricsSource {
  pageFigures(): FleetPageFigures;
  commitFigures(): FleetCommitFigures;
}

export function fleetMetrics(registry: Registry, source: FleetMetricsSource): void {
  new Gauge({
    name: "ippool_fleet_pages_held",
    help: "Bitmap pages of the pool this daemon holds with a free address: it takes new addresses from them.",
    labelNames: ["pool"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [pool, pages] of source.pageFigures().held) this.set({ pool }, pages);
    },
  });
  new Counter({
    name: "ippool_fleet_page_claims_total",
    help: "Pages this daemon claimed, by what they were: free (nobody's), own (its own before a restart) or stale (a daemon's past its lease).",
    labelNames: ["from"] as const,
    registers: [registry],
    collect() {
      const { claims } = source.pageFigures();
      this.reset();
      for (const from of ["free", "own", "stale"] as const) this.inc({ from }, claims[from]);
    },
  });
  new Counter({
    name: "ippool_fleet_page_claims_found_none_total",
    help: "Claims that found no page to take: the daemon then borrowed a live daemon's page, or the pool was full.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(source.pageFigures().claimsFindingNone);
    },
  });
  new Counter({
    name: "ippool_fleet_page_writes_fenced_total",
    help: "Writes refused because a page this daemon held had been claimed by another daemon (it was paused or cut off past its lease); the change was made again elsewhere.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(source.pageFigures().fenced);
    },
  });
  new Counter({
    name: "ippool_fleet_writes_total",
    help: "Write steps this daemon committed, by how: statement (new allocations on its own pages, one statement per batch), transaction, or none (steps with nothing to write, repeats for VMs that have their address, answered from one read per batch).",
    labelNames: ["commit"] as const,
    registers: [registry],
    collect() {
      const figures = source.commitFigures();
      this.reset();
      this.inc({ commit: "statement" }, figures.statement);
      this.inc({ commit: "transaction" }, figures.transaction);
      this.inc({ commit: "none" }, figures.unwritten);
    },
  });
  new Counter({
    name: "ippool_fleet_statements_stale_total",
    help: "One-statement commits refused because a page or pool had changed since this daemon read it (another daemon's release, a borrower); the batch was read and planned again.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(source.commitFigures().stale);
    },
  });
}
