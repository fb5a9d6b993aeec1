/**
 * The store as the services use it: every access is a synchronous step over a view of the store
 * (`StoreView`), run by the backend. The embedded store runs a step directly inside an LMDB
 * transaction. A shared store cannot answer a read synchronously, so it may run a step more than
 * once: it runs it, fetches whatever the step asked for and did not have, and runs it again until
 * the step completes (docs/FLEET.md). Hence the rules for a step:
 * - it has no effect outside the view (no I/O, no events, no counters of its own): those come
 *   after the step's promise resolves;
 * - it reads and validates first and writes last, and it returns a refusal rather than throwing
 *   one (allocator.ts), so it never leaves half a change in a shared transaction;
 * - it never catches what a read throws: that is how a backend learns what to fetch.
 */
import type { EipStore } from "../eip/store.ts";
import type { PoolStore } from "../pool/store.ts";

/**
 * Leases of singleton jobs (leak collection): with one daemon it holds every lease; in a fleet one
 * daemon at a time does, and a step checks that it still holds the lease it took, in the same
 * transaction as the job's writes, so a holder paused past its lease writes nothing.
 */
/** A singleton job's lease as taken: which job, and the epoch of this holding. */
export interface JobLease {
  readonly job: string;
  readonly epoch: number;
}

export interface JobStore {
  holdsJob(job: string, epoch: number): boolean;
}

/** Everything a step may read and write. */
export type StoreView = PoolStore & EipStore & JobStore;

export interface StepStore {
  /**
   * Takes or renews the lease of `job` for `ttlS` seconds: its epoch, or undefined while another
   * daemon holds it. The epoch changes whenever the lease passes to a new holding.
   */
  acquireJob(job: string, ttlS: number): Promise<number | undefined>;
  /** Runs a read-only step over the committed state. */
  read<T>(step: (view: StoreView) => T): Promise<T>;
  /** Runs a step in one write transaction; resolves once its changes are committed and durable. */
  write<T>(step: (view: StoreView) => T): Promise<T>;
}
