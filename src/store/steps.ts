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

/** Everything a step may read and write. */
export type StoreView = PoolStore & EipStore;

export interface StepStore {
  /** Runs a read-only step over the committed state. */
  read<T>(step: (view: StoreView) => T): Promise<T>;
  /** Runs a step in one write transaction; resolves once its changes are committed and durable. */
  write<T>(step: (view: StoreView) => T): Promise<T>;
}
