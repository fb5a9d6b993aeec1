/**
 * A TCP relay on loopback in front of a server, for tests of a peer that goes silent: `silence()`
 * stops every connection open at that moment from carrying data either way, without closing it,
 * as a server whose machine lost power leaves its clients' connections; connections made after
 * are relayed as before, as a promoted standby behind the same address answers them.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export interface Relay {
  readonly port: number;
  /** Silences every connection open now; later ones are relayed. */
  silence(): void;
  close(): Promise<void>;
}

export async function startRelay(targetPort: number): Promise<Relay> {
  const pairs = new Set<readonly [Socket, Socket]>();
  const silenced: (readonly [Socket, Socket])[] = [];
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const pair = [client, upstream] as const;
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const forget = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", forget).on("error", forget);
    upstream.on("close", forget).on("error", forget);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the relay has no port");
  return {
    port: address.port,
    silence() {
      // Unpiped and paused, each side's data stays in the kernel's buffers: nothing is answered,
      // nothing is closed.
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        silenced.push([client, upstream]);
      }
      pairs.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [client, upstream] of [...pairs, ...silenced]) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
