import { describe, expect, test } from "bun:test";
import { parseCommand } from "../../../src/cli/flags.ts";
import { UsageError } from "../../../src/cli/usage.ts";
import type { Overrides } from "../../../src/config/load.ts";

function usageError(argv: string[]): UsageError {
  try {
    parseCommand(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    expect((error as UsageError).code).toBe("USAGE");
    return error as UsageError;
  }
  throw new Error(`expected a UsageError for ${JSON.stringify(argv)}`);
}

describe("parseCommand", () => {
  test("no arguments means serve with no overrides", () => {
    expect(parseCommand([])).toEqual({ command: "serve", overrides: {} });
  });

  test.each(["serve", "fsck"] as const)("the %s command is recognised", (command) => {
    expect(parseCommand([command])).toEqual({ command, overrides: {} });
  });

  test("backup takes its destination and the daemon's options", () => {
    expect(parseCommand(["backup", "/srv/backup", "-c", "/etc/ippool.toml"])).toEqual({
      command: "backup",
      overrides: { configPath: "/etc/ippool.toml" },
      destination: "/srv/backup",
    });
  });

  test.each([[["backup"]], [["backup", ""]], [["backup", "a", "b"]], [["fsck", "a"]]])(
    "%p is a usage error",
    (argv) => {
      expect(() => parseCommand(argv)).toThrow(UsageError);
    },
  );

  const overrideCases: [string[], Overrides][] = [
    [["-p", "9000"], { port: 9000 }],
    [["--port", "9000"], { port: 9000 }],
    [["--port=9000"], { port: 9000 }],
    [["-n", "192.168.1"], { network: "192.168.1" }],
    [["--network", "192.168.1"], { network: "192.168.1" }],
    [["-g", "192.168.1.254"], { gateway: "192.168.1.254" }],
    [["--gateway", "192.168.1.254"], { gateway: "192.168.1.254" }],
    [["-d"], { debug: true }],
    [["--debug"], { debug: true }],
    [["-c", "/etc/ippool.toml"], { configPath: "/etc/ippool.toml" }],
    [["--listen", "0.0.0.0:80"], { listen: "0.0.0.0:80" }],
    [["--listen", ""], { listen: "" }],
    [["--socket", ""], { socket: "" }],
    [["--data-dir", "/srv/ippool"], { dataDir: "/srv/ippool" }],
    [["--log-format", "json"], { logFormat: "json" }],
  ];
  test.each(
    overrideCases.map(([argv, overrides]) => [argv.map((a) => JSON.stringify(a)).join(" "), argv, overrides] as const),
  )("%s sets its override", (_, argv, overrides) => {
    expect(parseCommand(argv)).toEqual({ command: "serve", overrides });
  });

  test("the original daemon's flags combine", () => {
    expect(parseCommand(["-p", "8081", "-n", "10.10.0", "-g", "10.10.0.254", "-d"])).toEqual({
      command: "serve",
      overrides: { port: 8081, network: "10.10.0", gateway: "10.10.0.254", debug: true },
    });
  });

  test("flags apply to the fsck command too", () => {
    expect(parseCommand(["fsck", "--data-dir", "/srv/ippool"])).toEqual({
      command: "fsck",
      overrides: { dataDir: "/srv/ippool" },
    });
  });

  test.each(["-h", "--help", "serve --help", "-p 9000 -h"])("%p asks for help", (line) => {
    expect(parseCommand(line.split(" "))).toEqual({ command: "help", overrides: {} });
  });

  test.each(["--version", "-V", "fsck --version"])("%p asks for the version", (line) => {
    expect(parseCommand(line.split(" "))).toEqual({ command: "version", overrides: {} });
  });

  test.each(["--bogus", "-x", "--port", "--debug=yes", "-p -1"])("%p is a UsageError", (line) => {
    usageError(line.split(" "));
  });

  test("an unknown flag is named in the error", () => {
    expect(usageError(["--frobnicate"]).message).toContain("--frobnicate");
  });

  test.each(["abc", "80a", "", "8080.0", "123456", " 80", "65536", "99999"])("port %p is a UsageError", (port) => {
    expect(usageError(["--port", port]).message).toContain("--port");
  });

  test("an unknown command is a UsageError", () => {
    expect(usageError(["start"]).message).toContain("start");
  });

  test("an extra argument is a UsageError", () => {
    expect(usageError(["serve", "extra"]).message).toContain("extra");
  });
});
