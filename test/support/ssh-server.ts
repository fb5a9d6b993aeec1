/**
 * An SSH server in the test process (ssh2's `Server`, as ssh2's own tests use it): no root, no
 * sshd, no shell. It listens on 127.0.0.1 (port 0), presents a host key generated at start,
 * accepts one client key (also generated), and answers each exec request from a scripted handler.
 * It records what a real host could not tell a test: every connection attempt, every command with
 * its stdin, and how many channels were open at once. It can stop and listen again, refuse or
 * stall connections, present another host key, and drop connections.
 *
 * The TCP side is a `net.Server` of its own: each accepted socket is counted first, then handed to
 * the ssh2 server (`injectSocket`), so attempts are seen even while connections are refused.
 */
import { createServer, type Server as NetServer, type Socket } from "node:net";
import {
  type AuthContext,
  type Connection,
  type ParsedKey,
  type ServerChannel,
  type Session,
  Server as Ssh2Server,
  utils,
} from "ssh2";
import { hostKeyFingerprint } from "../../src/hosts/fingerprint.ts";
import type { SshConnectionOptions } from "../../src/hosts/ssh-connection.ts";

/** How the scripted host answers one command. */
export type ExecReply =
  /** The command ran: this output and exit status (or, with `signal`, killed by it: "KILL"). */
  | { readonly stdout?: string; readonly stderr?: string; readonly code: number; readonly signal?: string }
  /** Never answers: the channel stays open until the client closes it. */
  | "hang"
  /** The connection goes (its socket is destroyed) while the command runs. */
  | "close";

export interface ExecRequest {
  /** The command string as the client sent it. */
  readonly command: string;
  /** The command split back into its arguments (the client single-quotes each one). */
  readonly argv: readonly string[];
  /** Everything written to stdin before the client closed it. */
  readonly stdin: string;
}

/** Answers a command; a promise delays the reply until it settles. */
export type ExecHandler = (request: ExecRequest) => ExecReply | Promise<ExecReply>;

export const ADDRESS = "127.0.0.1";

/** How long `until` waits before failing the test (a bound, not a pause: it returns as soon as the condition holds). */
const UNTIL_LIMIT_MS = 5000;

export class SshTestServer {
  /** The scripted host; replace it at any time (it applies to commands received from then on). */
  handler: ExecHandler;
  /**
   * What happens to a new TCP connection (each is counted first): "serve" runs SSH on it; "refuse"
   * closes it at once, before a word of SSH; "stall" holds it open and never says a word (a host
   * that hangs during the handshake).
   */
  mode: "serve" | "refuse" | "stall" = "serve";
  /** `performance.now()` of every TCP connection accepted, refused ones included. */
  readonly attempts: number[] = [];
  /** Every command received, in order. */
  readonly commands: ExecRequest[] = [];
  /** Connections that authenticated. */
  authenticated = 0;
  /** The most channels that were open at once. */
  maxOpenChannels = 0;
  /** The client key (OpenSSH private key file content) that the server accepts. */
  readonly clientKey: Buffer;

  private readonly acceptedKey: ParsedKey;
  private ssh!: Ssh2Server;
  private fingerprint = "";
  private listener: NetServer | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly openChannels = new Set<Session>();
  private readonly waiters = new Set<() => void>();

  /** 0 until the first `listen()` picks a free port; the same port after that. */
  private listeningPort = 0;

  private constructor(handler: ExecHandler) {
    this.handler = handler;
    const client = ed25519Key();
    this.clientKey = Buffer.from(client.private);
    this.acceptedKey = client.public;
    this.changeHostKey();
  }

  /** A server listening on 127.0.0.1 at a free port. */
  static async start(handler: ExecHandler): Promise<SshTestServer> {
    const server = new SshTestServer(handler);
    await server.listen();
    return server;
  }

  get port(): number {
    return this.listeningPort;
  }

  /** The fingerprint of the host key presented now (what a host definition pins). */
  get hostKey(): string {
    return this.fingerprint;
  }

  /** Channels open right now. */
  get channels(): number {
    return this.openChannels.size;
  }

  /** Options for an `SshConnection` to this server as host "hv1": short timeouts and backoff. */
  connectionOptions(overrides: Partial<SshConnectionOptions> = {}): SshConnectionOptions {
    return {
      name: "hv1",
      address: ADDRESS,
      port: this.port,
      user: "root",
      privateKey: this.clientKey,
      hostKey: this.hostKey,
      connectTimeoutMs: 2000,
      commandTimeoutMs: 2000,
      backoffInitialMs: 10,
      backoffMaxMs: 50,
      ...overrides,
    };
  }

  /** Listens (again) on the server's port. */
  async listen(): Promise<void> {
    if (this.listener) return;
    const listener = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(this.listeningPort, ADDRESS, () => {
        listener.off("error", reject);
        resolve();
      });
    });
    this.listener = listener;
    const address = listener.address();
    if (address && typeof address === "object") this.listeningPort = address.port;
  }

  /** Stops listening and drops every connection: the host is down (connects are refused by the kernel). */
  async stop(): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    this.dropConnections();
    if (listener) await new Promise<void>((resolve) => listener.close(() => resolve()));
  }

  /** Destroys every open connection's socket (no SSH goodbye), as a host crashing or a cable pulled would. */
  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Presents a new host key to connections from now on (a reinstalled host, or an impostor). Returns its fingerprint. */
  changeHostKey(): string {
    const key = ed25519Key();
    this.fingerprint = hostKeyFingerprint(key.public.getPublicSSH());
    const ssh = new Ssh2Server({ hostKeys: [key.private] }, (connection, info) => this.serve(connection, info.port));
    ssh.on("error", () => {});
    this.ssh = ssh;
    return this.fingerprint;
  }

  /**
   * Resolves as soon as `check()` holds; it is checked at once and after everything the server
   * sees (connections, authentications, channels, commands). Rejects after a few seconds.
   */
  until(check: () => boolean, what = "the condition"): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!check()) return;
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`ssh test server: ${what} did not happen within ${UNTIL_LIMIT_MS} ms`));
      }, UNTIL_LIMIT_MS);
      this.waiters.add(waiter);
    });
  }

  private accept(socket: Socket): void {
    this.attempts.push(performance.now());
    socket.on("error", () => {});
    if (this.mode === "refuse") {
      socket.destroy();
    } else {
      this.sockets.add(socket);
      socket.once("close", () => {
        this.sockets.delete(socket);
        this.changed();
      });
      if (this.mode === "serve") this.ssh.injectSocket(socket);
    }
    this.changed();
  }

  /** `clientPort` tells which of the accepted sockets this connection is (to drop that one only). */
  private serve(connection: Connection, clientPort: number): void {
    const socket = [...this.sockets].find((s) => s.remotePort === clientPort);
    const sessions = new Set<Session>();
    connection.on("error", () => {});
    connection.on("authentication", (context) => this.authenticate(context));
    connection.on("ready", () => {
      this.authenticated++;
      this.changed();
    });
    connection.on("session", (accept) => {
      const session = accept();
      sessions.add(session);
      this.openChannels.add(session);
      this.maxOpenChannels = Math.max(this.maxOpenChannels, this.openChannels.size);
      session.on("close", () => {
        sessions.delete(session);
        if (this.openChannels.delete(session)) this.changed();
      });
      // No "signal" listener: ssh2's server drops channel requests after the client's EOF, and
      // the client always sends EOF first, so a timed-out command's KILL request never shows here.
      session.on("exec", (acceptExec, _reject, info) => this.exec(acceptExec(), info.command, socket));
      this.changed();
    });
    // A dropped connection closes its channels without a word.
    connection.on("close", () => {
      for (const session of sessions) this.openChannels.delete(session);
      sessions.clear();
      this.changed();
    });
  }

  /** Public-key auth with the one accepted key; a signature, when sent, must verify. */
  private authenticate(context: AuthContext): void {
    if (context.method !== "publickey") {
      context.reject(["publickey"]);
      return;
    }
    const key = this.acceptedKey;
    const sameKey = context.key.algo === key.type && context.key.data.equals(key.getPublicSSH());
    // Without a signature the client only asks whether the key would do.
    const signed = !context.signature || !context.blob || key.verify(context.blob, context.signature, context.hashAlgo);
    if (sameKey && signed) context.accept();
    else context.reject();
  }

  private exec(stream: ServerChannel, command: string, socket: Socket | undefined): void {
    const stdin: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => stdin.push(chunk));
    stream.on("error", () => {});
    stream.once("end", async () => {
      const request: ExecRequest = {
        command,
        argv: splitQuoted(command),
        stdin: Buffer.concat(stdin).toString("utf8"),
      };
      // The handler is asked before anyone waiting on `commands` is told, so a reply it holds back
      // is already held by then.
      const reply = this.reply(request);
      this.commands.push(request);
      this.changed();
      this.answer(stream, await reply, socket);
    });
  }

  /** The handler's reply; a handler that throws answers exit status 255 with the error on stderr. */
  private async reply(request: ExecRequest): Promise<ExecReply> {
    try {
      return await this.handler(request);
    } catch (error) {
      return { code: 255, stderr: `ssh test server: the handler threw: ${String(error)}\n` };
    }
  }

  private answer(stream: ServerChannel, reply: ExecReply, socket: Socket | undefined): void {
    if (reply === "hang") return;
    if (reply === "close") {
      // The socket, not `connection.end()`: no SSH disconnect message, as in a crash.
      socket?.destroy();
      return;
    }
    if (!stream.writable) return; // the client gave up on it meanwhile
    if (reply.stdout) stream.write(reply.stdout);
    if (reply.stderr) stream.stderr.write(reply.stderr);
    if (reply.signal) stream.exit(reply.signal);
    else stream.exit(reply.code);
    stream.end();
  }

  private changed(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/**
 * A new ed25519 key pair: the private key in OpenSSH format, the public key parsed. ssh2 1.17's
 * `generateKeyPairSync` strips leading zero bytes from the public key's BIT STRING, so about one
 * key in 256 comes out a byte short and cannot be parsed (its private key neither): such a pair
 * is generated again.
 */
function ed25519Key(): { private: string; public: ParsedKey } {
  for (;;) {
    const pair = utils.generateKeyPairSync("ed25519");
    const pub = parsedOrNull(pair.public);
    if (pub && parsedOrNull(pair.private)) return { private: pair.private, public: pub };
  }
}

/** ssh2's `parseKey` returns an Error for some malformed keys and throws for others. */
function parsedOrNull(key: string): ParsedKey | null {
  try {
    const result = utils.parseKey(key);
    return result instanceof Error ? null : result;
  } catch {
    return null;
  }
}

/**
 * Splits a command line built by `buildCommand` back into arguments: single-quoted words, `\'`
 * for a quote, separated by spaces. Only what `quoteArg` produces needs to be understood.
 */
export function splitQuoted(command: string): string[] {
  const args: string[] = [];
  let current = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < command.length; i++) {
    const char = command[i] as string;
    if (quoted) {
      if (char === "'") quoted = false;
      else current += char;
    } else if (char === "'") {
      quoted = true;
      inWord = true;
    } else if (char === "\\" && i + 1 < command.length) {
      current += command[++i];
      inWord = true;
    } else if (char === " ") {
      if (inWord) args.push(current);
      current = "";
      inWord = false;
    } else {
      current += char;
      inWord = true;
    }
  }
  if (quoted) throw new Error(`unterminated quote in ${JSON.stringify(command)}`);
  if (inWord) args.push(current);
  return args;
}
