/**
 * SshConnection against an SSH server in the test process (test/support/ssh-server.ts): the first
 * connection wait, reconnects with backoff, host key pinning, command timeouts, the channel limit
 * and how results come back. No root, no sshd; test/hosts/ssh.test.ts runs the same connection
 * against real OpenSSH servers in network namespaces.
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  HostCommandFailedError,
  HostCommandTimeoutError,
  HostKeyMismatchError,
  HostUnavailableError,
} from "../../../src/hosts/errors.ts";
import type { HostLogger } from "../../../src/hosts/host-logger.ts";
import { SshConnection, type SshConnectionOptions } from "../../../src/hosts/ssh-connection.ts";
import type { Fields } from "../../../src/log/logger.ts";
import { type ExecHandler, type ExecReply, type ExecRequest, SshTestServer } from "../../support/ssh-server.ts";

const servers: SshTestServer[] = [];
const connections: SshConnection[] = [];

afterEach(async () => {
  // Servers first: a connection closing waits (up to 1 s) for a server that stalls to answer.
  await Promise.all(servers.splice(0).map((server) => server.stop()));
  await Promise.all(connections.splice(0).map((connection) => connection.close()));
});

/** The command as the host runs it, without the `timeout -s KILL <seconds>` wrapper. */
function program(request: ExecRequest): readonly string[] {
  return request.argv.slice(4);
}

/** Answers `echo` with its arguments; everything else exits 0 silently. */
function echo(request: ExecRequest): ExecReply {
  const [name, ...args] = program(request);
  return { stdout: name === "echo" ? `${args.join(" ")}\n` : "", code: 0 };
}

async function serverWith(handler: ExecHandler = echo): Promise<SshTestServer> {
  const server = await SshTestServer.start(handler);
  servers.push(server);
  return server;
}

function connectionTo(server: SshTestServer, overrides: Partial<SshConnectionOptions> = {}): SshConnection {
  const connection = new SshConnection(server.connectionOptions(overrides));
  connections.push(connection);
  return connection;
}

async function connected(server: SshTestServer, overrides: Partial<SshConnectionOptions> = {}) {
  const connection = connectionTo(server, overrides);
  connection.start();
  await connection.waitConnected(5000);
  return connection;
}

/** The command reports an SshConnection gives its `events` (host, program, seconds, failure). */
function recordedEvents() {
  const reported: { program: string; seconds: number | null; failure: string | null }[] = [];
  return {
    reported,
    events: {
      command: (_host: string, program: string, seconds: number | null, failure: string | null) => {
        reported.push({ program, seconds, failure });
      },
    },
  };
}

function recordingLogger(): HostLogger & { lines: { level: string; message: string; fields?: Fields }[] } {
  const lines: { level: string; message: string; fields?: Fields }[] = [];
  const record = (level: string) => (message: string, fields?: Fields) => {
    lines.push({ level, message, ...(fields ? { fields } : {}) });
  };
  return { lines, debug: record("debug"), info: record("info"), warn: record("warn") };
}

function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (error: unknown) => error,
  );
}

describe("the first connection", () => {
  test("a command issued right after start() waits for the first connection and runs", async () => {
    const server = await serverWith();
    const connection = connectionTo(server);
    connection.start();
    expect(connection.connected).toBe(false);
    expect(connection.startingUp).toBe(true);
    expect((await connection.exec(["echo", "first"])).stdout).toBe("first\n");
    expect(connection.startingUp).toBe(false);
    expect(server.attempts).toHaveLength(1);
  });

  test("a command waiting on a first attempt that fails answers HostUnavailableError with its cause", async () => {
    const server = await serverWith();
    await server.stop(); // nothing listens: the kernel refuses the connection
    const connection = connectionTo(server);
    connection.start();
    const error = await rejection(connection.exec(["echo", "first"]));
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toContain("host hv1: not connected: ");
    expect((error as Error).message).toContain("ECONNREFUSED");
  });

  test("the wait for the first attempt ends with the command's timeout", async () => {
    const server = await serverWith();
    server.mode = "stall"; // accepts the TCP connection, never answers
    const { reported, events } = recordedEvents();
    const connection = connectionTo(server, { connectTimeoutMs: 10_000, events });
    connection.start();
    const started = performance.now();
    const error = await rejection(connection.exec(["echo", "first"], { timeoutMs: 100 }));
    // Within the command's 100 ms (a generous bound for a loaded machine), not the 10 s handshake deadline.
    expect(performance.now() - started).toBeLessThan(1000);
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toBe("host hv1: not connected: still connecting");
    expect(connection.startingUp).toBe(true);
    expect(reported).toEqual([{ program: "echo", seconds: null, failure: "unavailable" }]);
    expect(server.commands).toEqual([]);
  });

  test("a command on a connection never started fails at once without touching the host", async () => {
    const server = await serverWith();
    const connection = connectionTo(server);
    const error = await rejection(connection.exec(["echo", "x"]));
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toBe("host hv1: not connected");
    expect(server.attempts).toEqual([]);
  });
});

describe("results", () => {
  test("arguments arrive verbatim under the remote deadline, stdin goes in, output and status come back", async () => {
    const server = await serverWith((request) => ({
      stdout: `${JSON.stringify(program(request))}\n`,
      stderr: "oops\nmore\n",
      code: request.stdin === "from stdin\n" ? 3 : 4,
    }));
    const connection = await connected(server);
    const hostile = ["a'b", "$(reboot)", "; rm -rf /", "two\nlines", ""];
    const result = await connection.exec(["printf", "%s|", ...hostile], { stdin: "from stdin\n", timeoutMs: 300 });
    expect(result).toEqual({
      stdout: `${JSON.stringify(["printf", "%s|", ...hostile])}\n`,
      stderr: "oops\nmore\n",
      code: 3,
    });
    // The host kills the command a grace period after the local deadline (300 ms + 250 ms).
    expect(server.commands[0]?.argv.slice(0, 4)).toEqual(["timeout", "-s", "KILL", "0.55"]);
    expect(server.commands[0]?.stdin).toBe("from stdin\n");
  });

  test("exec resolves whatever the status; run throws HostCommandFailedError naming the command and stderr", async () => {
    const server = await serverWith((request) =>
      program(request)[0] === "false" ? { stderr: "\n  oops  \nmore\n", code: 3 } : { stdout: "fine\n", code: 0 },
    );
    const { reported, events } = recordedEvents();
    const connection = await connected(server, { events });
    expect(await connection.exec(["false", "it"])).toEqual({ stdout: "", stderr: "\n  oops  \nmore\n", code: 3 });
    expect((await connection.run(["true"])).stdout).toBe("fine\n");
    const error = await rejection(connection.run(["false", "a b"]));
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect(error).not.toBeInstanceOf(HostCommandTimeoutError);
    expect((error as Error).message).toBe('host hv1: `false "a b"` exited with status 3: oops');
    expect(reported.map((r) => [r.program, r.failure])).toEqual([
      ["false", "exit_status"],
      ["true", null],
      ["false", "exit_status"],
    ]);
    expect(reported.every((r) => typeof r.seconds === "number" && r.seconds >= 0)).toBe(true);
  });
  test("a command killed by a signal has code -1 and the signal's name; run() names the signal once", async () => {
    const server = await serverWith(() => ({ stderr: "", code: 0, signal: "KILL" }));
    const connection = await connected(server);
    expect(await connection.exec(["virsh", "list"])).toEqual({ stdout: "", stderr: "", code: -1, signal: "KILL" });
    const error = await rejection(connection.run(["virsh", "list"]));
    expect((error as Error).message).toBe("host hv1: `virsh list` was killed by SIGKILL");
  });
});

describe("timeouts", () => {
  test("a command past its deadline fails with HostCommandTimeoutError, its channel is closed, the connection serves the next", async () => {
    const server = await serverWith((request) => (program(request)[0] === "sleep" ? "hang" : echo(request)));
    const { reported, events } = recordedEvents();
    const connection = await connected(server, { events });
    const error = await rejection(connection.exec(["sleep", "30"], { timeoutMs: 150 }));
    expect(error).toBeInstanceOf(HostCommandTimeoutError);
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect((error as Error).message).toBe("host hv1: `sleep 30` timed out after 150 ms");
    // The channel is closed (the remote `timeout` kills the command); the connection is kept.
    await server.until(() => server.channels === 0, "the timed-out channel's close");
    expect(connection.connected).toBe(true);
    expect((await connection.exec(["echo", "next"])).stdout).toBe("next\n");
    expect(server.attempts).toHaveLength(1);
    expect(reported.map((r) => [r.program, r.failure])).toEqual([
      ["sleep", "timeout"],
      ["echo", null],
    ]);
  });

  test("a command still waiting for a channel at its deadline times out without ever running", async () => {
    const server = await serverWith((request) => (program(request)[0] === "sleep" ? "hang" : echo(request)));
    const connection = await connected(server, { maxChannels: 1 });
    const hung = rejection(connection.exec(["sleep", "30"], { timeoutMs: 5000 }));
    await server.until(() => server.commands.length === 1, "the first command");
    const error = await rejection(connection.exec(["echo", "queued"], { timeoutMs: 100 }));
    expect(error).toBeInstanceOf(HostCommandTimeoutError);
    expect((error as Error).message).toBe("host hv1: `echo queued` timed out after 100 ms");
    expect(server.commands.map(program)).toEqual([["sleep", "30"]]);
    await connection.close();
    expect(await hung).toBeInstanceOf(HostUnavailableError);
  });
});

describe("the channel limit", () => {
  test("many commands at once never open more channels than maxChannels, and all complete", async () => {
    const held: (() => void)[] = [];
    const server = await serverWith((request) => new Promise((resolve) => held.push(() => resolve(echo(request)))));
    const connection = await connected(server, { maxChannels: 3 });
    const results = Promise.all(
      Array.from({ length: 20 }, (_, i) => connection.exec(["echo", String(i)]).then((r) => r.stdout)),
    );
    // Answer in rounds: each round, as many commands as there are channels are running on the host.
    let answered = 0;
    while (answered < 20) {
      const expected = Math.min(3, 20 - answered);
      await server.until(() => held.length === expected && server.channels === expected, `${expected} running`);
      expect(server.commands).toHaveLength(answered + expected);
      answered += expected;
      for (const answer of held.splice(0)) answer();
    }
    expect(await results).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
    expect(server.maxOpenChannels).toBe(3);
  });
});

describe("host key pinning", () => {
  test("a host presenting another key is refused before authenticating, never runs the command, and is retried", async () => {
    const server = await serverWith();
    const pinned = server.hostKey;
    const presented = server.changeHostKey();
    const logger = recordingLogger();
    const connection = connectionTo(server, { hostKey: pinned, logger });
    connection.start();
    const error = await rejection(connection.exec(["echo", "secret"]));
    expect(error).toBeInstanceOf(HostKeyMismatchError);
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as HostKeyMismatchError).code).toBe("HOST_KEY_MISMATCH");
    expect((error as Error).message).toBe(
      `host hv1 (127.0.0.1:${server.port}) presented host key ${presented}, not the pinned ${pinned}: connection refused`,
    );
    expect(connection.lastError).toBe(error as Error);
    expect(await rejection(connection.waitConnected(50))).toBeInstanceOf(HostKeyMismatchError);
    // It keeps trying (the key may be put right), and is refused every time; logged once, as a warning.
    await server.until(() => server.attempts.length >= 3, "three attempts");
    expect(connection.connected).toBe(false);
    expect(server.authenticated).toBe(0);
    expect(server.commands).toEqual([]);
    const failures = logger.lines.filter((line) => line.message === "host connection failed");
    expect(failures).toHaveLength(1);
    expect(failures[0]?.level).toBe("warn");
  });

  test("a host whose key changes while connected is refused on reconnect, and commands fail fast", async () => {
    const server = await serverWith();
    const connection = await connected(server);
    const down = new Promise<void>((resolve) => connection.onDisconnect(() => resolve()));
    server.changeHostKey();
    server.dropConnections();
    await down;
    await server.until(() => connection.lastError instanceof HostKeyMismatchError, "a refused reconnect");
    const error = await rejection(connection.exec(["echo", "secret"]));
    expect(error).toBeInstanceOf(HostKeyMismatchError);
    expect(server.authenticated).toBe(1);
    expect(server.commands).toEqual([]);
  });
});

describe("reconnecting", () => {
  test("after a drop it retries with growing delays up to the maximum, reconnects, and starts over", async () => {
    const server = await serverWith();
    const logger = recordingLogger();
    const changes: string[] = [];
    const connection = await connected(server, { backoffInitialMs: 10, backoffMaxMs: 80, logger });
    connection.onDisconnect(() => changes.push("down"));
    connection.onConnect(() => changes.push("up"));
    server.mode = "refuse";
    server.dropConnections();
    // The first connection, then six refused attempts.
    await server.until(() => server.attempts.length === 7, "six refused attempts");
    expect(changes).toEqual(["down"]);
    expect(connection.connected).toBe(false);
    const error = await rejection(connection.exec(["echo", "x"]));
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toStartWith("host hv1: not connected: ");
    expect(connection.lastError).toBeInstanceOf(HostUnavailableError);
    // Each wait is at least the delay due (timers never fire early; 1 ms for rounding): 20, 40, 80, then
    // capped at 80. An uncapped backoff would wait 320 ms before the last attempt.
    const refused = server.attempts.slice(1, 7);
    const gaps = refused.slice(1).map((at, i) => at - (refused[i] as number));
    [20, 40, 80, 80, 80].forEach((delay, i) => {
      expect(gaps[i]).toBeGreaterThanOrEqual(delay - 1);
    });
    expect(gaps[4]).toBeLessThan(320);
    // A host that stays down is logged once, with the delay before the next attempt.
    const failed = () => logger.lines.filter((line) => line.message === "host connection failed");
    expect(failed().map((line) => line.fields?.retry_ms)).toEqual([20]);

    server.mode = "serve";
    await connection.waitConnected(5000);
    expect(changes).toEqual(["down", "up"]);
    expect(connection.lastError).toBeNull();
    expect((await connection.exec(["echo", "back"])).stdout).toBe("back\n");

    // The backoff started over: after the next drop the first failure is logged with 20 ms again, not 80.
    server.mode = "refuse";
    const before = server.attempts.length;
    server.dropConnections();
    await server.until(() => server.attempts.length === before + 1, "a refused attempt");
    await server.until(() => failed().length === 2, "the failure logged");
    expect(failed().map((line) => line.fields?.retry_ms)).toEqual([20, 20]);
  });

  test("a host that goes down (nothing listening) is reconnected to when it listens again", async () => {
    const server = await serverWith();
    let refusedLogged = () => {};
    const refused = new Promise<void>((resolve) => {
      refusedLogged = resolve;
    });
    const logger = recordingLogger();
    const connection = await connected(server, {
      logger: {
        ...logger,
        info: (message, fields) => {
          logger.info(message, fields);
          if (message === "host connection failed" && String(fields?.error).includes("ECONNREFUSED")) refusedLogged();
        },
      },
    });
    const down = new Promise<void>((resolve) => connection.onDisconnect(() => resolve()));
    await server.stop();
    await down;
    await refused;
    const error = await rejection(connection.exec(["echo", "x"]));
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toContain("ECONNREFUSED");
    await server.listen();
    await connection.waitConnected(5000);
    expect((await connection.exec(["echo", "back"])).stdout).toBe("back\n");
    expect(server.attempts).toHaveLength(2);
    expect(server.authenticated).toBe(2);
  });

  test("a command running when the connection drops fails with HostUnavailableError; the next one runs after reconnecting", async () => {
    const server = await serverWith((request) => (program(request)[0] === "crash" ? "close" : echo(request)));
    const { reported, events } = recordedEvents();
    const connection = await connected(server, { events });
    const error = await rejection(connection.exec(["crash"]));
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toMatch(/^host hv1: connection dropped/);
    await connection.waitConnected(5000);
    expect((await connection.exec(["echo", "again"])).stdout).toBe("again\n");
    expect(server.attempts).toHaveLength(2);
    expect(reported.map((r) => [r.program, r.failure])).toEqual([
      ["crash", "unavailable"],
      ["echo", null],
    ]);
  });

  test("close() fails running commands and ends the connection for good", async () => {
    const server = await serverWith(() => "hang");
    const connection = await connected(server);
    const running = rejection(connection.exec(["sleep", "30"]));
    await server.until(() => server.commands.length === 1, "the command");
    await connection.close();
    const error = await running;
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toBe("host hv1: connection closed");
    expect(connection.connected).toBe(false);
    expect(await rejection(connection.exec(["echo", "x"]))).toBeInstanceOf(HostUnavailableError);
    await server.until(() => server.channels === 0, "the channel closed");
  });
});
