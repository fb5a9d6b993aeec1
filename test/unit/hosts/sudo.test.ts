import { describe, expect, test } from "bun:test";
import type { ExecOptions, ExecResult } from "../../../src/hosts/exec-channels.ts";
import { withSudo } from "../../../src/hosts/host.ts";
import type { CommandRunner } from "../../../src/hosts/nat.ts";

/** Records what it is asked to run. */
function recorder(): CommandRunner & { calls: (readonly string[])[] } {
  const calls: (readonly string[])[] = [];
  const ok: ExecResult = { stdout: "", stderr: "", code: 0 };
  return {
    name: "hv1",
    calls,
    async exec(argv: readonly string[], _options?: ExecOptions) {
      calls.push(argv);
      return ok;
    },
    async run(argv: readonly string[], _options?: ExecOptions) {
      calls.push(argv);
      return ok;
    },
    commandFailed: (argv: readonly string[]) => new Error(argv.join(" ")),
  };
}

describe("withSudo", () => {
  test("runs every command through sudo -n, which never prompts", async () => {
    const inner = recorder();
    const runner = withSudo(inner);
    await runner.exec(["nft", "-f", "-"], { stdin: "" });
    await runner.run(["arping", "-c", "1", "-U", "-I", "eth0", "100.64.0.1"]);
    expect(inner.calls).toEqual([
      ["sudo", "-n", "nft", "-f", "-"],
      ["sudo", "-n", "arping", "-c", "1", "-U", "-I", "eth0", "100.64.0.1"],
    ]);
  });

  test("names the command as it ran when it fails", () => {
    const error = withSudo(recorder()).commandFailed(["ip", "addr"], { stdout: "", stderr: "", code: 1 });
    expect(error.message).toBe("sudo -n ip addr");
  });
});
