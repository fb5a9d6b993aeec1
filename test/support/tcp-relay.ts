/**
 * A TCP relay on loopback in front of a server, for tests of a peer that goes silent: `silence()`
 * stops connections open at that moment from carrying data either way, without closing them, as
 * a server whose machine lost power leaves its clients' connections; connections made after are
 * relayed as before, as a promoted standby behind the same address answers them.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export interface Relay {
  readonly port: number;
  /** Silences the connections open now (those of the given places in the order they were accepted, 0 first; default all); later ones are relayed. */
  silence(accepted?: readonly number[]): void;
  close(): Promise<void>;
}

export async function startRelay(targetPort: number): Promise<Relay> {
  /** Open connections: client side, server side, place in the order accepted. */
  const pairs = new Set<readonly [Socket, Socket, number]>();
  const silenced: (readonly [Socket, Socket, number])[] = [];
  let accepted = 0;
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const pair = [client, upstream, accepted++] as const;
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
    silence(places) {
      // Unpiped and paused, each side's data stays in the kernel's buffers: nothing is answered,
      // nothing is closed.
      for (const pair of pairs) {
        const [client, upstream, place] = pair;
        if (places !== undefined && !places.includes(place)) continue;
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        pairs.delete(pair);
        silenced.push(pair);
      }
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
