import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Config } from "../../../src/config/config.ts";
import { ConfigError } from "../../../src/config/errors.ts";
import { loadConfig } from "../../../src/config/load.ts";
import { validateConfig } from "../../../src/config/validate.ts";
import { parseCidr, parseIpv4, parseRange } from "../../../src/net/ipv4.ts";

function configError(body: () => unknown): ConfigError {
  try {
    body();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).code).toBe("CONFIG_INVALID");
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError, none was thrown");
}

function invalid(document: unknown): string {
  return configError(() => validateConfig(document)).message;
}

const pool = (extra: Record<string, unknown> = {}) => ({ name: "lab", cidr: "10.0.0.0/24", ...extra });

const tempDir = mkdtempSync(join(tmpdir(), "ippool-config-test-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));

function tomlFile(name: string, text: string): string {
  const path = join(tempDir, name);
  writeFileSync(path, text);
  return path;
}

describe("validateConfig defaults", () => {
  test("a single pool with nothing else gets every default", () => {
    const config: Config = validateConfig({ pools: [pool()] });
    expect(config.listen).toEqual({ hostname: "127.0.0.1", port: 8080 });
    expect(config.socket).toBe("/run/ippool/ippool.sock");
    expect(config.dataDir).toBe("/var/lib/ippool");
    expect(config.logFormat).toBe("text");
    expect(config.logLevel).toBe("info");
    expect(config.defaultPool).toBe("lab");
    expect(config.pools).toEqual([
      {
        name: "lab",
        cidr: parseCidr("10.0.0.0/24"),
        gateway: parseIpv4("10.0.0.1"),
        reserved: [],
        strategy: "next-fit",
      },
    ]);
  });

  test("the result is frozen", () => {
    const config = validateConfig({ pools: [pool()] });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.pools)).toBe(true);
  });

  test("explicit settings are kept", () => {
    const config = validateConfig({
      server: {
        listen: "[::1]:9000",
        socket: "/tmp/x.sock",
        data_dir: "/srv/ippool",
        log_format: "json",
        log_level: "warn",
      },
      pools: [
        pool({ gateway: "10.0.0.254", reserved: ["10.0.0.10-10.0.0.20", "10.0.0.30"], strategy: "lowest" }),
        { name: "second", cidr: "10.0.1.0/24", default: true },
      ],
    });
    expect(config.listen).toEqual({ hostname: "::1", port: 9000 });
    expect(config.socket).toBe("/tmp/x.sock");
    expect(config.dataDir).toBe("/srv/ippool");
    expect(config.logFormat).toBe("json");
    expect(config.logLevel).toBe("warn");
    expect(config.defaultPool).toBe("second");
    expect(config.pools[0]).toEqual({
      name: "lab",
      cidr: parseCidr("10.0.0.0/24"),
      gateway: parseIpv4("10.0.0.254"),
      reserved: [parseRange("10.0.0.10-10.0.0.20"), parseRange("10.0.0.30")],
      strategy: "lowest",
    });
  });

  test("the first pool is the default when none says default = true", () => {
    const config = validateConfig({ pools: [pool(), { name: "other", cidr: "10.0.1.0/24" }] });
    expect(config.defaultPool).toBe("lab");
  });

  test('listen "" turns TCP off while the socket stays', () => {
    const config = validateConfig({ server: { listen: "" }, pools: [pool()] });
    expect(config.listen).toBeNull();
    expect(config.socket).toBe("/run/ippool/ippool.sock");
  });

  test('socket "" turns the socket off while TCP stays', () => {
    const config = validateConfig({ server: { socket: "" }, pools: [pool()] });
    expect(config.socket).toBeNull();
    expect(config.listen).toEqual({ hostname: "127.0.0.1", port: 8080 });
  });

  test.each([
    ["0.0.0.0:80", "0.0.0.0", 80],
    ["localhost:65535", "localhost", 65535],
    ["host-1.example.com:1", "host-1.example.com", 1],
    ["[::]:8080", "::", 8080],
  ])("listen %p is host %p port %i", (listen, hostname, port) => {
    expect(validateConfig({ server: { listen }, pools: [pool()] }).listen).toEqual({ hostname, port });
  });
});

describe("validateConfig pools", () => {
  test.each([
    ["10.0.0.0/31", null],
    ["10.0.0.1/32", null],
  ])("%s without a gateway is accepted and has none", (cidr, gateway) => {
    const config = validateConfig({ pools: [pool({ cidr })] });
    expect(config.pools[0]?.gateway).toBe(gateway);
  });

  test("a /8 is accepted", () => {
    expect(validateConfig({ pools: [pool({ cidr: "10.0.0.0/8" })] }).pools[0]?.cidr.prefix).toBe(8);
  });

  test("a prefix shorter than /8 is refused", () => {
    const message = invalid({ pools: [pool({ cidr: "10.0.0.0/7" })] });
    expect(message).toStartWith("pools[0].cidr:");
    expect(message).toContain("/8");
  });

  test("/0 is refused", () => {
    expect(invalid({ pools: [pool({ cidr: "0.0.0.0/0" })] })).toStartWith("pools[0].cidr:");
  });

  test("a CIDR with host bits set names the network address", () => {
    const message = invalid({ pools: [pool({ cidr: "10.0.0.5/24" })] });
    expect(message).toStartWith("pools[0].cidr:");
    expect(message).toContain("10.0.0.0");
  });

  test("a malformed CIDR names the key", () => {
    expect(invalid({ pools: [pool({ cidr: "10.0.0/24" })] })).toStartWith("pools[0].cidr:");
  });

  test("overlapping pools are refused, naming the later pool's cidr and the earlier pool", () => {
    const message = invalid({ pools: [pool(), { name: "wide", cidr: "10.0.0.0/16" }] });
    expect(message).toStartWith("pools[1].cidr:");
    expect(message).toContain("overlaps pools[0]");
    expect(message).toContain('"lab"');
  });

  test("adjacent pools do not overlap", () => {
    expect(validateConfig({ pools: [pool(), { name: "next", cidr: "10.0.1.0/24" }] }).pools).toHaveLength(2);
  });

  test("a gateway outside the CIDR is refused", () => {
    const message = invalid({ pools: [pool({ gateway: "10.0.1.1" })] });
    expect(message).toStartWith("pools[0].gateway:");
    expect(message).toContain("outside 10.0.0.0/24");
  });

  test.each(["10.0.0.0", "10.0.0.255"])("a gateway at the network or broadcast address (%s) is refused", (gateway) => {
    const message = invalid({ pools: [pool({ gateway })] });
    expect(message).toStartWith("pools[0].gateway:");
    expect(message).toContain("network or broadcast");
  });

  test("a malformed gateway is refused", () => {
    expect(invalid({ pools: [pool({ gateway: "10.0.0.01" })] })).toStartWith("pools[0].gateway:");
  });

  test.each(["10.0.0.9-10.0.0.3", "10.0.0.3-", "10.0.0.300", "10.0.0.3 - 10.0.0.9"])(
    "a malformed reserved range %p is refused",
    (text) => {
      const message = invalid({ pools: [pool({ reserved: ["10.0.0.50", text] })] });
      expect(message).toStartWith("pools[0].reserved[1]:");
    },
  );

  test.each(["10.0.1.5", "10.0.0.250-10.0.1.5", "9.255.255.255-10.0.0.3"])(
    "a reserved range %p not inside the CIDR is refused",
    (text) => {
      const message = invalid({ pools: [pool({ reserved: [text] })] });
      expect(message).toStartWith("pools[0].reserved[0]:");
      expect(message).toContain("not inside 10.0.0.0/24");
    },
  );

  test("duplicate pool names are refused", () => {
    const message = invalid({ pools: [pool(), { name: "lab", cidr: "10.0.1.0/24" }] });
    expect(message).toStartWith("pools[1].name:");
    expect(message).toContain("pools[0]");
  });

  test("two pools saying default = true are refused", () => {
    const message = invalid({
      pools: [pool({ default: true }), { name: "b", cidr: "10.0.1.0/24", default: true }],
    });
    expect(message).toStartWith("pools[1].default:");
  });

  test.each(["Lab", "-lab", "lab.1", "", "a".repeat(64)])("pool name %p is refused", (name) => {
    expect(invalid({ pools: [pool({ name })] })).toStartWith("pools[0].name:");
  });

  test("an unknown strategy is refused", () => {
    expect(invalid({ pools: [pool({ strategy: "random" })] })).toStartWith("pools[0].strategy:");
  });

  test("no pools at all is refused", () => {
    expect(invalid({})).toStartWith("pools:");
    expect(invalid({ pools: [] })).toStartWith("pools:");
  });
});

describe("validateConfig server and shape", () => {
  test.each([
    ["a pool", { pools: [pool({ gatway: "10.0.0.1" })] }, "pools[0].gatway"],
    ["the server section", { server: { port: 80 }, pools: [pool()] }, "server.port"],
    ["the top level", { pools: [pool()], extra: true }, "extra"],
  ])("an unknown key in %s is refused, naming the key", (_, document, key) => {
    const message = invalid(document);
    expect(message).toStartWith(`${key}:`);
    expect(message).toContain("unknown key");
  });

  test("a value of the wrong type names the key", () => {
    expect(invalid({ server: { listen: 8080 }, pools: [pool()] })).toStartWith("server.listen:");
  });

  test('listen "" and socket "" together are refused', () => {
    const message = invalid({ server: { listen: "", socket: "" }, pools: [pool()] });
    expect(message).toContain("server.listen");
    expect(message).toContain("server.socket");
  });

  test.each(["localhost", "127.0.0.1:", ":8080", "127.0.0.1:65536", "127.0.0.1:123456", "127.0.0.1:http", "a b:80"])(
    "listen %p is refused",
    (listen) => {
      expect(invalid({ server: { listen }, pools: [pool()] })).toStartWith("server.listen:");
    },
  );

  test("an unknown log level is refused", () => {
    expect(invalid({ server: { log_level: "verbose" }, pools: [pool()] })).toStartWith("server.log_level:");
  });

  test("more than 256 pools is one short line naming the limit, not the whole array", () => {
    const pools = Array.from({ length: 257 }, (_, i) =>
      pool({ name: `p${i}`, cidr: `10.${i % 256}.${Math.floor(i / 256)}.0/24` }),
    );
    const message = invalid({ pools });
    expect(message).toBe("pools: expected array length to be less or equal to 256 (got an array of 257 entries)");
  });

  test("a long string value is quoted cut short", () => {
    const message = invalid({ server: { log_level: "x".repeat(500) }, pools: [pool()] });
    expect(message.length).toBeLessThan(200);
    expect(message).toEndWith("…)");
  });

  test("an empty data_dir is refused", () => {
    expect(invalid({ server: { data_dir: "" }, pools: [pool()] })).toStartWith("server.data_dir:");
  });

  test("the pool API is gated unless open_pool_api says otherwise", () => {
    expect(validateConfig({ pools: [pool()] }).openPoolApi).toBe(false);
    expect(validateConfig({ server: { open_pool_api: true }, pools: [pool()] }).openPoolApi).toBe(true);
  });

  test("open_pool_api together with an admin key is refused: which one is meant is unclear", () => {
    const server = { open_pool_api: true, admin_key_sha256: "a".repeat(64) };
    expect(invalid({ server, pools: [pool()] })).toStartWith("server.open_pool_api:");
  });

  test('open_pool_api = "yes" is refused as not a boolean', () => {
    expect(invalid({ server: { open_pool_api: "yes" }, pools: [pool()] })).toStartWith("server.open_pool_api:");
  });
});

describe("validateConfig [leaks]", () => {
  test("the grace period defaults to 15 minutes", () => {
    expect(validateConfig({ pools: [pool()] }).leakGracePeriodS).toBe(900);
  });

  test.each([0, 60, 86_400])("grace_period_s = %p is kept", (seconds) => {
    expect(validateConfig({ pools: [pool()], leaks: { grace_period_s: seconds } }).leakGracePeriodS).toBe(seconds);
  });

  test.each([
    [{ grace_period_s: -1 }, "leaks.grace_period_s:"],
    [{ grace_period_s: 1.5 }, "leaks.grace_period_s:"],
    [{ grace_period_s: "15m" }, "leaks.grace_period_s:"],
    [{ grace_period_s: 40_000_000 }, "leaks.grace_period_s:"],
    [{ grace: 60 }, "leaks.grace:"],
  ])("%p is refused, naming the key", (leaks, key) => {
    expect(invalid({ pools: [pool()], leaks })).toStartWith(key);
  });
});

describe("validateConfig [store]", () => {
  const shared = (extra: Record<string, unknown> = {}) => ({
    pools: [pool()],
    store: { backend: "postgres", url: "postgres://ippool@db1,db2/ippool", daemon: "hv1", ...extra },
  });

  test("without a [store] section the state is the embedded LMDB store", () => {
    expect(validateConfig({ pools: [pool()] }).store).toEqual({ backend: "lmdb" });
  });

  test("the shared store keeps a daemon's pages 15 s past its last heartbeat and waits 10 s for the database unless lease_s and timeout_s say otherwise", () => {
    expect(validateConfig(shared()).store).toEqual({
      backend: "postgres",
      url: "postgres://ippool@db1,db2/ippool",
      daemon: "hv1",
      leaseSeconds: 15,
      timeoutSeconds: 10,
    });
    expect(validateConfig(shared({ lease_s: 2, timeout_s: 1 })).store).toMatchObject({
      leaseSeconds: 2,
      timeoutSeconds: 1,
    });
  });

  test("a timeout under 1 s, over an hour or not whole, or one given to the embedded store, is refused", () => {
    expect(invalid(shared({ timeout_s: 0 }))).toContain("store.timeout_s");
    expect(invalid(shared({ timeout_s: 3601 }))).toContain("store.timeout_s");
    expect(invalid(shared({ timeout_s: 1.5 }))).toContain("store.timeout_s");
    expect(invalid({ pools: [pool()], store: { timeout_s: 10 } })).toContain("store.timeout_s are for");
  });

  test("a lease under 2 s or over an hour, or one given to the embedded store, is refused", () => {
    expect(invalid(shared({ lease_s: 1 }))).toContain("store.lease_s");
    expect(invalid(shared({ lease_s: 3601 }))).toContain("store.lease_s");
    expect(invalid({ pools: [pool()], store: { lease_s: 10 } })).toContain(
      'store.url, store.daemon, store.lease_s and store.timeout_s are for store.backend = "postgres"',
    );
  });
});

describe("loadConfig", () => {
  test("without a file it loads the embedded default", () => {
    const config = loadConfig({});
    expect(config.listen).toEqual({ hostname: "127.0.0.1", port: 8080 });
    expect(config.socket).toBe("data/ippool.sock");
    expect(config.dataDir).toBe("data");
    expect(config.defaultPool).toBe("default");
    expect(config.pools).toHaveLength(1);
    expect(config.pools[0]?.cidr).toEqual(parseCidr("172.16.0.0/24"));
  });

  test("reads a TOML file", () => {
    const path = tomlFile(
      "good.toml",
      `[server]
listen = "0.0.0.0:8080"

[[pools]]
name = "lab"
cidr = "10.0.0.0/24"
reserved = ["10.0.0.10-10.0.0.19"]
`,
    );
    const config = loadConfig({ configPath: path });
    expect(config.listen).toEqual({ hostname: "0.0.0.0", port: 8080 });
    expect(config.pools[0]?.reserved).toEqual([parseRange("10.0.0.10-10.0.0.19")]);
  });

  test("a TOML syntax error names the file and the line", () => {
    const path = tomlFile(
      "broken.toml",
      `[server]\nlisten = "0.0.0.0:8080"\n\n[[pools]]\nname = "lab\ncidr = "10.0.0.0/24"\n`,
    );
    const message = configError(() => loadConfig({ configPath: path })).message;
    expect(message).toStartWith(`${path}:5:`);
  });

  test("a missing file names the path", () => {
    const path = join(tempDir, "missing.toml");
    const message = configError(() => loadConfig({ configPath: path })).message;
    expect(message).toContain(path);
    expect(message).toContain("ENOENT");
  });

  test("an invalid file is reported by key", () => {
    const path = tomlFile("invalid.toml", `[[pools]]\nname = "lab"\ncidr = "10.0.0.0/24"\ngateway = "10.0.1.1"\n`);
    expect(configError(() => loadConfig({ configPath: path })).message).toStartWith("pools[0].gateway:");
  });
});

describe("applyOverrides via loadConfig", () => {
  test("--network a.b.c replaces the pools with one /24 whose gateway is .1", () => {
    const config = loadConfig({ network: "192.168.1" });
    expect(config.pools).toEqual([
      {
        name: "default",
        cidr: parseCidr("192.168.1.0/24"),
        gateway: parseIpv4("192.168.1.1"),
        reserved: [],
        strategy: "next-fit",
      },
    ]);
    expect(config.defaultPool).toBe("default");
  });

  test("--network replaces every pool of a file", () => {
    const path = tomlFile(
      "two-pools.toml",
      `[[pools]]\nname = "a"\ncidr = "10.0.0.0/24"\n\n[[pools]]\nname = "b"\ncidr = "10.0.1.0/24"\ndefault = true\n`,
    );
    const config = loadConfig({ configPath: path, network: "192.168.1" });
    expect(config.pools.map((p) => p.name)).toEqual(["default"]);
    expect(config.defaultPool).toBe("default");
  });

  test("--network with --gateway uses that gateway", () => {
    expect(loadConfig({ network: "192.168.1", gateway: "192.168.1.254" }).pools[0]?.gateway).toBe(
      parseIpv4("192.168.1.254"),
    );
  });

  test.each(["192.168.1.0", "192.168", "a.b.c", "192.168.1.0/24"])("--network %p is refused", (network) => {
    expect(configError(() => loadConfig({ network })).message).toStartWith("--network:");
  });

  test("--gateway alone changes the first pool's gateway", () => {
    expect(loadConfig({ gateway: "172.16.0.254" }).pools[0]?.gateway).toBe(parseIpv4("172.16.0.254"));
  });

  test("--port keeps the host of the default listen address", () => {
    expect(loadConfig({ port: 9000 }).listen).toEqual({ hostname: "127.0.0.1", port: 9000 });
  });

  test("--port keeps the host of the file's listen address", () => {
    const path = tomlFile(
      "listen.toml",
      `[server]\nlisten = "0.0.0.0:8080"\n\n[[pools]]\nname = "a"\ncidr = "10.0.0.0/24"\n`,
    );
    expect(loadConfig({ configPath: path, port: 9000 }).listen).toEqual({ hostname: "0.0.0.0", port: 9000 });
  });

  test("--port keeps a bracketed IPv6 host", () => {
    expect(loadConfig({ listen: "[::1]:8080", port: 9000 }).listen).toEqual({ hostname: "::1", port: 9000 });
  });

  test("--port above 65535 is refused as server.listen", () => {
    expect(configError(() => loadConfig({ port: 70000 })).message).toStartWith("server.listen:");
  });

  test("--listen, --socket, --data-dir, --debug and --log-format override the file", () => {
    const config = loadConfig({
      listen: "10.1.1.1:7000",
      socket: "",
      dataDir: "/tmp/elsewhere",
      debug: true,
      logFormat: "json",
    });
    expect(config.listen).toEqual({ hostname: "10.1.1.1", port: 7000 });
    expect(config.socket).toBeNull();
    expect(config.dataDir).toBe("/tmp/elsewhere");
    expect(config.logLevel).toBe("debug");
    expect(config.logFormat).toBe("json");
  });

  test('--listen "" with the socket off is refused', () => {
    expect(configError(() => loadConfig({ listen: "", socket: "" })).message).toContain("nothing to serve on");
  });

  test("a level from RUST_LOG replaces the file's; --debug wins over it", () => {
    const path = tomlFile("warn.toml", `[server]\nlog_level = "warn"\n\n[[pools]]\nname = "a"\ncidr = "10.0.0.0/24"\n`);
    expect(loadConfig({ configPath: path }).logLevel).toBe("warn");
    expect(loadConfig({ configPath: path, logLevel: "error" }).logLevel).toBe("error");
    expect(loadConfig({ configPath: path, logLevel: "error", debug: true }).logLevel).toBe("debug");
  });

  test("an unknown --log-format is refused as server.log_format", () => {
    expect(configError(() => loadConfig({ logFormat: "xml" })).message).toStartWith("server.log_format:");
  });
});

describe("pools with nothing to hand out", () => {
  test.each([
    [{ cidr: "10.0.0.5/32", gateway: "10.0.0.5" }],
    [{ cidr: "10.0.0.0/31", gateway: "10.0.0.0", reserved: ["10.0.0.1"] }],
    [{ cidr: "10.0.0.0/30", reserved: ["10.0.0.2"] }],
  ])("%p is refused, naming the pool", (extra) => {
    expect(invalid({ pools: [pool(extra)] })).toStartWith("pools[0]: no usable address");
  });
});
