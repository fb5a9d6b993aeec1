/** Reconnect delays (src/hosts/backoff.ts); ssh-connection.test.ts sees them on the wire. */
import { describe, expect, test } from "bun:test";
import { Backoff } from "../../../src/hosts/backoff.ts";

describe("Backoff", () => {
  test("doubles from the initial delay up to the maximum, then stays there", () => {
    const backoff = new Backoff(250, 30_000);
    const delays = Array.from({ length: 10 }, () => backoff.take());
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  });

  test("upcomingMs is the delay take() returns next, without taking it", () => {
    const backoff = new Backoff(10, 80);
    expect(backoff.upcomingMs).toBe(10);
    expect(backoff.upcomingMs).toBe(10);
    backoff.take();
    expect(backoff.upcomingMs).toBe(20);
    expect(backoff.take()).toBe(20);
  });

  test("a reset starts over from the initial delay", () => {
    const backoff = new Backoff(10, 80);
    for (let i = 0; i < 5; i++) backoff.take();
    expect(backoff.upcomingMs).toBe(80);
    backoff.reset();
    expect([backoff.take(), backoff.take()]).toEqual([10, 20]);
  });
});
