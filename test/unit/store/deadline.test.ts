import { describe, expect, test } from "bun:test";
import { isConnectionFailure, unavailable } from "../../../src/store/postgres/connection.ts";
import { DatabaseSilentError, withDeadline } from "../../../src/store/postgres/deadline.ts";

const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

describe("withDeadline", () => {
  test("an answer within the timeout is passed on, and the connections are kept", async () => {
    let silences = 0;
    expect(await withDeadline(after(5, "answer"), 200, () => silences++)).toBe("answer");
    await Bun.sleep(250);
    expect(silences).toBe(0);
  });

  test("a failure within the timeout is passed on as it is", async () => {
    const failure = Object.assign(new Error("duplicate key"), { code: "23505" });
    const given = withDeadline(Promise.reject(failure), 200, () => {});
    expect(await given.catch((error: unknown) => error)).toBe(failure);
  });

  test("no answer within the timeout is a 503 STORE_UNAVAILABLE saying so, and the connections are replaced once", async () => {
    let silences = 0;
    const started = performance.now();
    const error = await withDeadline(new Promise(() => {}), 50, () => silences++).catch((e: unknown) => e);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    expect(error).toBeInstanceOf(DatabaseSilentError);
    expect(isConnectionFailure(error)).toBe(true);
    const answered = unavailable(error);
    expect([answered?.status, answered?.code]).toEqual([503, "STORE_UNAVAILABLE"]);
    expect(answered?.message).toContain("the database did not answer within 0.05 s");
    expect(silences).toBe(1);
  });

  test("work answering after it was given up changes nothing more", async () => {
    let silences = 0;
    const late = after(80, "late");
    const error = await withDeadline(late, 20, () => silences++).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseSilentError);
    expect(await late).toBe("late");
    expect(silences).toBe(1);
  });
});
