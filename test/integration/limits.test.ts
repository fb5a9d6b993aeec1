/**
 * Resource limits against the compiled daemon: thousands of idle TCP connections and slow-loris
 * clients do not take the Unix socket (or TCP) away from everyone else, are closed by the daemon
 * in the end, and bodies over the 64 KiB limit are refused before they are read whole.
 * `test/limits/limits-soak.ts` is the long variant (`make soak`).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { bufferedAtMost, establishedOn, medianMs, RawConnection, requireOpenFiles, rssKiB } from "../limits/clients.ts";
import { Daemon } from "../support/daemon.ts";

const IDLE = 10_000;
/** Of the idle connections, these make one request first and then stay idle (keep-alive). */
const IDLE_AFTER_REQUEST = 1_000;
const SLOW_HEADS = 250;
const SLOW_BODIES = 250;
const MAX_BODY = 64 * 1024;
const MiB = 1024 * 1024;
/** Files each side needs beyond the connections (listeners, store, pipes, the runtime's own). */
const SPARE_FILES = 200;
/** Sent one byte a second by the slow heads: it would take 90 s to arrive whole. */
const SLOW_HEAD = `GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(40)}\r\n\r\n`;

let daemon: Daemon;
let port: number;

// `connection: close`: a keep-alive connection of the test's own would be counted as held.
const CLOSE = { connection: "close" };

function health(via: "tcp" | "unix") {
  return async () => {
    const response = await daemon.fetch("/api/v1/health", { via, headers: CLOSE });
    if (response.status !== 200) throw new Error(`health over ${via} answered ${response.status}`);
    await response.arrayBuffer();
  };
}

async function allocateAndRelease(via: "tcp" | "unix", vmId: string): Promise<[number, number]> {
  const body = JSON.stringify({ vm_id: vmId });
  const allocated = await daemon.fetch("/api/v1/ip/allocate", { method: "POST", body, headers: CLOSE, via });
  await allocated.arrayBuffer();
  const released = await daemon.fetch(`/api/v1/ip/release/${vmId}`, { method: "DELETE", headers: CLOSE, via });
  await released.arrayBuffer();
  return [allocated.status, released.status];
}

beforeAll(async () => {
  daemon = await Daemon.start();
  port = Number(new URL(daemon.baseUrl).port);
  const needed = IDLE + SLOW_HEADS + SLOW_BODIES + SPARE_FILES;
  requireOpenFiles("self", needed, "the test process");
  requireOpenFiles(daemon.proc.pid, needed, "the daemon");
});
afterAll(async () => {
  await daemon.dispose();
});

describe(`with ${IDLE.toLocaleString("en")} idle TCP connections and ${SLOW_HEADS + SLOW_BODIES} slow-loris clients`, () => {
  let idle: RawConnection[] = [];
  let slowHeads: RawConnection[] = [];
  let slowBodies: RawConnection[] = [];
  let quietMedian = 0;

  beforeAll(async () => {
    await medianMs(10, health("unix")); // warm-up, so both medians are of a warm daemon
    quietMedian = await medianMs(50, health("unix"));
    idle = await RawConnection.openMany({ port }, IDLE);
    await Promise.all(
      idle.slice(0, IDLE_AFTER_REQUEST).map((connection) => {
        connection.write("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
        return connection.answered(10_000);
      }),
    );
    slowHeads = await RawConnection.openMany({ port }, SLOW_HEADS);
    for (const connection of slowHeads) connection.trickle(SLOW_HEAD, 1000);
    slowBodies = await RawConnection.openMany({ port }, SLOW_BODIES);
    slowBodies.forEach((connection, i) => {
      const framing = i % 2 === 0 ? "Content-Length: 1000" : "Transfer-Encoding: chunked";
      connection.write(
        `POST /api/v1/ip/allocate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`,
      );
      connection.trickle(i % 2 === 0 ? " ".repeat(1000) : "1\r\n \r\n".repeat(200), 1000);
    });
  }, 30_000);
  afterAll(() => {
    for (const connection of [...idle, ...slowHeads, ...slowBodies]) connection.destroy();
  });

  test("the daemon holds every one of them (counted on its side)", async () => {
    const all = IDLE + SLOW_HEADS + SLOW_BODIES;
    // Connections the kernel completed on a SYN cookie show up once the daemon has accepted them.
    let established = 0;
    for (let tries = 0; tries < 100 && established < all; tries++) {
      established = await establishedOn(port);
      if (established < all) await Bun.sleep(50);
    }
    console.log(`limits: ${established} connections established on the daemon's side`);
    expect(established).toBeGreaterThanOrEqual(all);
  });

  test("the Unix socket answers health and an allocate/release while they are held", async () => {
    const heldMedian = await medianMs(50, health("unix"));
    expect(await allocateAndRelease("unix", "limits-unix")).toEqual([201, 200]);
    console.log(
      `limits: health over the socket, median of 50: ${quietMedian.toFixed(3)} ms alone, ${heldMedian.toFixed(3)} ms with the connections held`,
    );
    expect(idle.filter((connection) => connection.isClosed).length).toBe(0);
  });

  test("TCP accepts and answers new requests while they are held", async () => {
    await health("tcp")();
    expect(await allocateAndRelease("tcp", "limits-tcp")).toEqual([201, 200]);
    expect(idle.filter((connection) => connection.isClosed).length).toBe(0);
  });

  test("a client trickling its body gets 408 REQUEST_TIMEOUT and is disconnected", async () => {
    await Promise.all(slowBodies.map((connection) => connection.closed));
    const outcomes = new Set(
      slowBodies.map((c) => `${c.closedByPeer} ${c.status} ${(c.json as { code: string }).code}`),
    );
    expect([...outcomes]).toEqual(["true 408 REQUEST_TIMEOUT"]);
  }, 20_000);

  test("a client trickling its request head is disconnected, unanswered, before the head is complete", async () => {
    await Promise.all(slowHeads.map((connection) => connection.closed));
    const outcomes = new Set(
      slowHeads.map((c) => `${c.closedByPeer} ${c.answer.length} ${c.written < SLOW_HEAD.length}`),
    );
    expect([...outcomes]).toEqual(["true 0 true"]);
    const sent = slowHeads.map((c) => c.written);
    console.log(
      `limits: ${SLOW_HEADS} slow heads closed by the daemon after ${Math.min(...sent)}–${Math.max(...sent)} bytes`,
    );
  }, 30_000);

  test("idle connections are closed by the daemon after its idle timeout, those that made a request too", async () => {
    await Promise.all(idle.map((connection) => connection.closed));
    expect(idle.filter((connection) => !connection.closedByPeer).length).toBe(0);
    expect(await establishedOn(port)).toBe(0);
    expect(await allocateAndRelease("unix", "limits-after")).toEqual([201, 200]);
  }, 30_000);
});

describe("bodies over the 64 KiB limit are refused before they are read whole", () => {
  let rssBefore = 0;
  beforeAll(() => {
    rssBefore = rssKiB(daemon.proc.pid);
  });

  const head = (host: string, framing: string) =>
    `POST /api/v1/ip/allocate HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
  const chunk = Buffer.concat([Buffer.from("10000\r\n"), Buffer.alloc(0x10000, 0x20), Buffer.from("\r\n")]);

  test.each(["tcp", "unix"] as const)(
    "a declared 1 GiB body of which 4 KiB are sent gets the JSON 413 at once (%s)",
    async (via) => {
      const connection = await RawConnection.open(via === "tcp" ? { port } : { unix: daemon.socket });
      const sent = Buffer.concat([
        Buffer.from(head("localhost", `Content-Length: ${1024 * MiB}`)),
        Buffer.alloc(4096, 0x20),
      ]);
      connection.write(sent);
      await connection.closed;
      expect(connection.closedByPeer).toBe(true);
      expect(connection.status).toBe(413);
      expect(connection.json).toEqual({ error: "request body is larger than 65536 bytes", code: "PAYLOAD_TOO_LARGE" });
      expect(connection.written).toBeLessThanOrEqual(sent.length);
    },
  );

  // A one-letter host makes the handler re-make the request (app.ts `routable`); cancelling the
  // body of that copy waited for the client to stop sending, and the answer waited with it.
  test.each([
    ["tcp", "localhost"],
    ["tcp", "x"],
    ["unix", "localhost"],
    ["unix", "x"],
  ] as const)("a chunked body that keeps coming is cut off with the JSON 413 (%s, Host %s)", async (via, host) => {
    const connection = await RawConnection.open(via === "tcp" ? { port } : { unix: daemon.socket });
    connection.write(head(host, "Transfer-Encoding: chunked"));
    connection.flood(chunk, 100 * MiB);
    await connection.closed;
    console.log(
      `limits: chunked over ${via} (Host ${host}): ${connection.written} bytes written before the answer closed it`,
    );
    expect(connection.closedByPeer).toBe(true);
    expect(connection.status).toBe(413);
    expect(connection.json).toMatchObject({ code: "PAYLOAD_TOO_LARGE" });
    expect(connection.written).toBeLessThan(bufferedAtMost(MAX_BODY));
  });

  test("the daemon's memory does not grow with the bodies it refused", async () => {
    for (let round = 0; round < 20; round++) {
      const connection = await RawConnection.open({ port });
      connection.write(head("localhost", "Transfer-Encoding: chunked"));
      connection.flood(chunk, 100 * MiB);
      await connection.closed;
    }
    const rssAfter = rssKiB(daemon.proc.pid);
    console.log(`limits: daemon RSS ${rssBefore} KiB before the oversized bodies, ${rssAfter} KiB after`);
    expect(rssAfter - rssBefore).toBeLessThan(50 * 1024);
  }, 20_000);
});
