/**
 * Work started without being awaited (the old host's clean-up after a move, a re-announcement,
 * reconciliation on connect): tracked, so a caller that must know it has ended (the tests) can
 * wait for it rather than guess how long it takes.
 */
export class BackgroundWork {
  private readonly pending = new Set<Promise<unknown>>();

  /** Starts tracking `work`; its failures must be handled by the caller's own catch. */
  track(work: Promise<unknown>): void {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /** Resolves once nothing is pending, including work started while waiting. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}
