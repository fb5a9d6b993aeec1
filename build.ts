/**
 * Compiles the daemon into one executable, dist/ippool. lmdb's loader looks for its native
 * addon on the filesystem, which does not exist inside a compiled binary; this rewrites the
 * lookup into a static require of the prebuilt addon so Bun embeds it. ssh2's optional native
 * parts (cpu-features, sshcrypto.node) do not load under Bun anyway: they are replaced by stubs
 * that throw, which ssh2 catches before falling back to its pure-JS code. And a race in the
 * `postgres` driver that could end the daemon is closed (guardPostgresWrites).
 */
import type { BunPlugin } from "bun";

const LMDB_ADDON = "@lmdb/lmdb-linux-x64/node.napi.glibc.node";

const embedLmdbAddon: BunPlugin = {
  name: "embed-lmdb-addon",
  setup(build) {
    build.onLoad({ filter: /[\\/]lmdb[\\/](native\.js|dist[\\/]index\.cjs)$/ }, async ({ path }) => {
      const source = await Bun.file(path).text();
      const rewritten = source.replace(
        /loadNAPI(__default\["default"\])?\(dirName\)/,
        `require(${JSON.stringify(LMDB_ADDON)})`,
      );
      if (rewritten === source) throw new Error(`embed-lmdb-addon: loader call not found in ${path}`);
      return { contents: rewritten, loader: "js" };
    });
  },
};

/**
 * The `postgres` driver sends a connection's buffered bytes from a `setImmediate`; when the
 * connection closes first (its server killed mid-load), the callback can still run under Bun and
 * find no socket: an uncaught TypeError that ended the daemon (exit 1) in the failover test. The
 * bytes belong to a connection that is gone, whose queries the driver fails with it, so they are
 * dropped.
 */
const guardPostgresWrites: BunPlugin = {
  name: "guard-postgres-writes",
  setup(build) {
    build.onLoad({ filter: /[\\/]postgres[\\/]src[\\/]connection\.js$/ }, async ({ path }) => {
      const source = await Bun.file(path).text();
      const unguarded = "const x = socket.write(chunk, fn)";
      if (!source.includes(unguarded)) throw new Error(`guard-postgres-writes: ${unguarded} not found in ${path}`);
      const guarded = source.replace(
        unguarded,
        `if (!socket) return (chunk = nextWriteTimer = null, false)\n    ${unguarded}`,
      );
      return { contents: guarded, loader: "js" };
    });
  },
};

/** Modules ssh2 requires inside try/catch and can do without. */
const stubSsh2Natives: BunPlugin = {
  name: "stub-ssh2-natives",
  setup(build) {
    build.onResolve({ filter: /^cpu-features$/ }, () => ({ path: "cpu-features", namespace: "ssh2-native-stub" }));
    build.onResolve({ filter: /[\\/]sshcrypto\.node$/ }, () => ({
      path: "sshcrypto.node",
      namespace: "ssh2-native-stub",
    }));
    build.onLoad({ filter: /.*/, namespace: "ssh2-native-stub" }, ({ path }) => ({
      contents: `throw new Error(${JSON.stringify(`${path} is left out of the binary; ssh2 uses its pure-JS code`)});`,
      loader: "js",
    }));
  },
};

const result = await Bun.build({
  entrypoints: ["src/main.ts"],
  compile: { outfile: "dist/ippool" },
  bytecode: true,
  plugins: [embedLmdbAddon, stubSsh2Natives, guardPostgresWrites],
});
if (!result.success) {
  for (const message of result.logs) console.error(message);
  process.exit(1);
}
console.log("built dist/ippool");
