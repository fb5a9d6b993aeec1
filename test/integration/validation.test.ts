/** Bad input gets a clear 4xx JSON error with a code, and changes nothing. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { Daemon } from "../support/daemon.ts";

let daemon: Daemon;
let snapshot: string;

async function state(): Promise<string> {
  const list = await daemon.json("/api/v1/ip/allocations");
  const stats = await daemon.json("/api/v1/ip/stats");
  return JSON.stringify([list.body, stats.body]);
}

beforeAll(async () => {
  daemon = await Daemon.start();
  await daemon.post("/api/v1/ip/allocate", { vm_id: "existing", hostname: "keep" });
  snapshot = await state();
});
afterAll(async () => {
  try {
    expect(await state()).toBe(snapshot);
  } finally {
    await daemon.dispose();
  }
});

function rawPost(body: string, headers: Record<string, string> = { "content-type": "application/json" }) {
  return daemon.fetch("/api/v1/ip/allocate", { method: "POST", body, headers });
}

describe("request bodies", () => {
  test.each([
    ["truncated JSON", '{"vm_id":'],
    ["not JSON at all", "vm_id=x"],
    ["a trailing comma", '{"vm_id":"x",}'],
  ])("%s answers 400 MALFORMED_JSON", async (_what, body) => {
    const response = await rawPost(body);
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: "MALFORMED_JSON" });
  });

  test.each([
    ["no body", ""],
    ["no vm_id", "{}"],
    ["a numeric vm_id", '{"vm_id":42}'],
    ["an empty vm_id", '{"vm_id":""}'],
    ["a vm_id with a control character", '{"vm_id":"a\\u0001"}'],
    ["a vm_id with an unpaired surrogate", '{"vm_id":"a\\ud800"}'],
    ["a vm_id of 257 characters", JSON.stringify({ vm_id: "v".repeat(257) })],
    ["a hostname with a control character", '{"vm_id":"x","hostname":"a\\u0007b"}'],
    ["a numeric hostname field", '{"vm_id":"x","hostname":5}'],
    ["an ip with leading zeros", '{"vm_id":"x","ip":"172.16.0.010"}'],
    ["an ip out of range", '{"vm_id":"x","ip":"172.16.0.256"}'],
    ["a pool name with capitals", '{"vm_id":"x","pool":"VMS"}'],
    ["an array body", "[]"],
    ["a string body", '"x"'],
    ["an ip object with a toString key (found by the fuzzer: it answered 500)", '{"vm_id":"a","ip":{"toString":1}}'],
    ["a vm_id object with a valueOf key", '{"vm_id":{"valueOf":null}}'],
    [
      "an interface with a field it does not declare",
      '{"vm_id":"x","interfaces":[{"mac":"52:54:00:00:00:01","network":"default","model":"virtio"}]}',
    ],
    [
      "an interface naming both a network and a bridge",
      '{"vm_id":"x","interfaces":[{"mac":"52:54:00:00:00:01","network":"default","bridge":"br0"}]}',
    ],
  ])("%s answers 422 VALIDATION naming the field", async (_what, body) => {
    const response = await rawPost(body);
    expect(response.status).toBe(422);
    const error = (await response.json()) as { code: string; error: string };
    expect(error.code).toBe("VALIDATION");
    expect(error.error).toStartWith("body");
  });

  test("a null hostname is accepted as no hostname, as the original's Option did", async () => {
    const { status, body } = await daemon.post("/api/v1/ip/allocate", { vm_id: "existing", hostname: null });
    expect(status).toBe(201);
    expect(body.hostname).toBe("keep");
  });

  test("a body declared larger than 64 KiB answers 413 before it is read", async () => {
    const response = await rawPost(JSON.stringify({ vm_id: "x", pad: "p".repeat(70_000) }));
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ code: "PAYLOAD_TOO_LARGE" });
  });

  test("a chunked body that grows past 64 KiB answers 413", async () => {
    const chunk = new TextEncoder().encode(" ".repeat(16 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 6) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const response = await daemon.fetch("/api/v1/ip/allocate", {
      method: "POST",
      body: stream,
      headers: { "content-type": "application/json" },
    });
    expect(response.status).toBe(413);
  });
});

describe("paths and query strings", () => {
  test.each([
    ["/api/v1/ip/release-by-ip/999.1.1.1", "DELETE"],
    ["/api/v1/ip/release-by-ip/abc", "DELETE"],
    [`/api/v1/ip/${"v".repeat(257)}`, "GET"],
    ["/api/v1/ip/a%07b", "GET"],
    ["/api/v1/ip/allocations?limit=0", "GET"],
    ["/api/v1/ip/allocations?limit=-1", "GET"],
    ["/api/v1/ip/allocations?limit=abc", "GET"],
    ["/api/v1/ip/allocations?after=nope", "GET"],
    ["/api/v1/ip/stats?pool=Bad!", "GET"],
  ])("%s answers 400 with a JSON error", async (path, method) => {
    const response = await daemon.fetch(path, { method });
    expect(response.status).toBe(400);
    expect(await response.json()).toHaveProperty("code");
  });

  test("an unknown route answers 404 JSON", async () => {
    const response = await daemon.fetch("/api/v2/nothing");
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: "ROUTE_NOT_FOUND" });
  });
});

describe("no client input yields a 5xx", () => {
  test("a batch of odd requests all answer below 500", async () => {
    const odd: [string, RequestInit][] = [
      [
        "/api/v1/ip/allocate",
        { method: "POST", body: "\u0000\u0001", headers: { "content-type": "application/json" } },
      ],
      [
        "/api/v1/ip/allocate",
        { method: "POST", body: '{"vm_id":"x\\u0002"}', headers: { "content-type": "text/plain" } },
      ],
      [
        "/api/v1/ip/allocate",
        { method: "POST", body: '{"vm_id":""}', headers: { "content-type": "multipart/form-data" } },
      ],
      ["/api/v1/ip/allocate", { method: "POST", body: '{"__proto__":{"vm_id":"x"}}' }],
      ["/api/v1/ip/allocate", { method: "POST", body: JSON.stringify({ vm_id: "x", ip: null }) }],
      ["/api/v1/ip/allocate", { method: "GET" }],
      ["/api/v1/ip/release/%", { method: "DELETE" }],
      ["/api/v1/ip/release/%ZZ", { method: "DELETE" }],
      ["/api/v1/ip/%2F", { method: "GET" }],
      ["/api/v1/ip/allocations?limit=1e3", { method: "GET" }],
      ["/api/v1/ip/allocations?limit=1&limit=2", { method: "GET" }],
      ["/api/v1/pools/%00", { method: "GET" }],
    ];
    for (const [path, init] of odd) {
      const response = await daemon.fetch(path, init);
      expect(`${path} ${response.status}`).toBe(`${path} ${Math.min(response.status, 499)}`);
    }
  });

  test("raw malformed HTTP on the socket does not disturb the daemon", async () => {
    await new Promise<void>((resolve) => {
      const socket = connect({ path: daemon.socket }, () => socket.end("GARBAGE / HTTP/9.9\r\n\r\n\r\n"));
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
      socket.resume();
    });
    expect((await daemon.json("/api/v1/health", { via: "unix" })).status).toBe(200);
  });
});

describe("hosts in the request URL", () => {
  test("a one-letter Host header still reaches the route", async () => {
    const response = await daemon.fetch("/api/v1/health", { headers: { host: "a" } });
    expect(response.status).toBe(200);
  });

  test("curl --unix-socket with a one-letter host (a common hook idiom) still reaches the route", async () => {
    const proc = Bun.spawn(["curl", "-s", "--unix-socket", daemon.socket, "http://x/api/v1/ip/existing"], {
      stdout: "pipe",
    });
    const body = JSON.parse(await new Response(proc.stdout).text());
    expect(body).toMatchObject({ vm_id: "existing" });
  });
});
