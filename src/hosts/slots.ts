/**
 * A counting semaphore with deadlines: at most `size` holders at once, the rest wait in order.
 * sshd refuses more than `MaxSessions` (default 10) channels on one connection, so the SSH
 * connection runs at most a few execs at a time and queues the others.
 */
export class Slots {
  private free: number;
  private readonly waiters: { grant: () => void }[] = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1)
      throw new RangeError(`slots: size must be a positive integer (got ${size})`);
    this.free = size;
  }

  /**
   * Resolves with a release function once a slot is free; rejects with `onTimeout()` if none is
   * free within `timeoutMs`. Call the release function exactly once.
   */
  acquire(timeoutMs: number, onTimeout: () => Error): Promise<() => void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve(this.releaser());
        },
      };
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(onTimeout());
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.free++;
    };
  }
}
