/**
 * Compiles the daemon into one executable, dist/ippool. lmdb's loader looks for its native
 * addon on the filesystem, which does not exist inside a compiled binary; this rewrites the
 * lookup into a static require of the prebuilt addon so Bun embeds it.
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

const result = await Bun.build({
  entrypoints: ["src/main.ts"],
  compile: { outfile: "dist/ippool" },
  plugins: [embedLmdbAddon],
});
if (!result.success) {
  for (const message of result.logs) console.error(message);
  process.exit(1);
}
console.log("built dist/ippool");
