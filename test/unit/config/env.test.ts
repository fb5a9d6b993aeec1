/** IPPOOL_CONFIG and RUST_LOG: what each value becomes, and that a flag beats either. */
import { describe, expect, test } from "bun:test";
import { logLevelOfRustLog, overridesFromEnv } from "../../../src/config/env.ts";
import { ConfigError } from "../../../src/config/errors.ts";

describe("overridesFromEnv", () => {
  test("an empty environment overrides nothing", () => {
    expect(overridesFromEnv({})).toEqual({});
  });

  test("IPPOOL_CONFIG names the config file; empty means unset", () => {
    expect(overridesFromEnv({ IPPOOL_CONFIG: "/etc/ippool/ippool.toml" })).toEqual({
      configPath: "/etc/ippool/ippool.toml",
    });
    expect(overridesFromEnv({ IPPOOL_CONFIG: "" })).toEqual({});
  });

  test("RUST_LOG=debug, the original README's switch, asks for debug logging", () => {
    expect(overridesFromEnv({ RUST_LOG: "debug" })).toEqual({ logLevel: "debug" });
  });

  test("other variables are not read", () => {
    expect(overridesFromEnv({ IPPOOL_LISTEN: "0.0.0.0:1", LOG_LEVEL: "debug", PATH: "/bin" })).toEqual({});
  });
});

describe("logLevelOfRustLog", () => {
  test.each([
    ["trace", "debug"],
    ["DEBUG", "debug"],
    ["info", "info"],
    ["Warn", "warn"],
    ["error", "error"],
    ["off", "error"],
  ] as const)("the bare level %p is %p", (value, level) => {
    expect(logLevelOfRustLog(value)).toBe(level);
  });

  test("ippool's own directive wins over a bare level, in either order", () => {
    expect(logLevelOfRustLog("warn,ippool=debug")).toBe("debug");
    expect(logLevelOfRustLog("ippool=error,info")).toBe("error");
  });

  test("the original's --debug filter, ippool=debug,tower_http=debug, is debug", () => {
    expect(logLevelOfRustLog("ippool=debug,tower_http=debug")).toBe("debug");
  });

  test("a bare ippool target enables everything of ippool's", () => {
    expect(logLevelOfRustLog("info,ippool")).toBe("debug");
  });

  test("directives for other targets leave the level to the config file", () => {
    expect(logLevelOfRustLog("tower_http=trace,hyper=off")).toBeUndefined();
    expect(logLevelOfRustLog("tower_http")).toBeUndefined();
    expect(logLevelOfRustLog(" , ")).toBeUndefined();
  });

  test("a level of another target is not checked: it is not ippool's to read", () => {
    expect(logLevelOfRustLog("hyper=loud,info")).toBe("info");
  });

  test.each(["ippool=verbose", "ippool=", "ippool=constructor"])("%p is refused, naming RUST_LOG", (value) => {
    let error: unknown;
    try {
      logLevelOfRustLog(value);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toStartWith(`RUST_LOG=${JSON.stringify(value)}:`);
  });

  test("a bare word that is not a level names a target, as in the original's filter", () => {
    expect(logLevelOfRustLog("constructor")).toBeUndefined();
  });
});
