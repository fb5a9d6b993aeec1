import { describe, expect, test } from "bun:test";
import {
  buildCommand,
  quoteArg,
  validDomain,
  validInterface,
  validIpv4,
  validLibvirtUri,
} from "../../../src/hosts/command.ts";
import { InvalidCommandArgumentError } from "../../../src/hosts/errors.ts";

/** What a POSIX shell makes of a command line: the argv it would run (sh -c 'printf "%s\0" ...'). */
function shellSplit(command: string): string[] {
  const result = Bun.spawnSync(["sh", "-c", `printf '%s\\0' ${command}`]);
  expect(result.exitCode).toBe(0);
  const text = result.stdout.toString();
  return text.slice(0, -1).split("\0");
}

const HOSTILE = [
  "a'b",
  "'",
  "''",
  "$(reboot)",
  "`reboot`",
  "; rm -rf /",
  "&& rm -rf /",
  "| cat /etc/shadow",
  "a\nreboot",
  "a\r\nb",
  "$HOME",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal shell expansion is the point
  "${IFS}",
  "*",
  "~root",
  "\\",
  "\\'",
  '"quoted"',
  "-n",
  "--help",
  " leading and trailing ",
  "tab\there",
  "é ünïcode ✓",
  "",
];

describe("quoteArg / buildCommand", () => {
  test.each([
    ["simple", "'simple'"],
    ["a'b", "'a'\\''b'"],
    ["", "''"],
    ["$(reboot)", "'$(reboot)'"],
    ["; rm -rf /", "'; rm -rf /'"],
    ["a\nb", "'a\nb'"],
  ])("quotes %j as %s", (arg, quoted) => {
    expect(quoteArg(arg)).toBe(quoted);
  });

  test.each(HOSTILE.map((arg) => [arg]))("a shell reads %j back as exactly one argument", (arg) => {
    expect(shellSplit(buildCommand([arg]))).toEqual([arg]);
  });

  test("every argument of an argv survives the shell unchanged and separately", () => {
    const argv = ["nft", "-f", "-", ...HOSTILE];
    expect(shellSplit(buildCommand(argv))).toEqual(argv);
  });

  test("a hostile argument never runs anything", () => {
    const marker = `/tmp/ippool-quote-test-${process.pid}`;
    const argv = [`$(touch ${marker})`, `; touch ${marker}`, `\`touch ${marker}\``, `'; touch ${marker}; '`];
    shellSplit(buildCommand(argv));
    expect(Bun.file(marker).size).toBe(0);
  });

  test("refuses an empty argv and NUL bytes", () => {
    expect(() => buildCommand([])).toThrow(InvalidCommandArgumentError);
    expect(() => buildCommand(["a\0b"])).toThrow(InvalidCommandArgumentError);
  });
});

describe("validIpv4", () => {
  test.each(["0.0.0.0", "10.0.0.1", "100.64.0.5", "192.168.100.11", "255.255.255.255"])("accepts %s", (ip) => {
    expect(validIpv4(ip)).toBe(ip);
  });

  test.each([
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "01.2.3.4",
    " 1.2.3.4",
    "1.2.3.4 ",
    "1.2.3.4\n",
    "1.2.3.4/32",
    "1.2.3.4;reboot",
    "$(reboot)",
    "a'b",
    "::1",
    "localhost",
  ])("refuses %j", (ip) => {
    expect(() => validIpv4(ip)).toThrow(InvalidCommandArgumentError);
  });

  test("names what was expected in the message", () => {
    expect(() => validIpv4("x", "EIP")).toThrow(/invalid EIP: "x"/);
  });
});

describe("validInterface", () => {
  test.each(["eth0", "br-ex", "enp1s0f0", "vlan.100", "a_b", "123456789012345"])("accepts %s", (name) => {
    expect(validInterface(name)).toBe(name);
  });

  test.each(["", "1234567890123456", "eth 0", "eth0;reboot", "$(reboot)", "a'b", "eth0\n", "eth/0", "eth:0"])(
    "refuses %j",
    (name) => {
      expect(() => validInterface(name)).toThrow(InvalidCommandArgumentError);
    },
  );
});

describe("validDomain", () => {
  test.each([
    "vm1",
    "web-01.example",
    "instance_1+a:b",
    "6695eb01-f6a4-8304-79aa-97f2502e193f",
    "6695EB01-F6A4-8304-79AA-97F2502E193F",
  ])("accepts %s", (name) => {
    expect(validDomain(name)).toBe(name);
  });

  test("accepts 200 characters, refuses 201", () => {
    expect(validDomain("a".repeat(200))).toBe("a".repeat(200));
    expect(() => validDomain("a".repeat(201))).toThrow(InvalidCommandArgumentError);
  });

  test.each([
    "",
    "-vm",
    "--help",
    ".hidden",
    "vm 1",
    "vm1;reboot",
    "; rm -rf /",
    "$(reboot)",
    "`reboot`",
    "a'b",
    'a"b',
    "vm1\nreboot",
    "vm/1",
    "vm*",
    "vm1&",
    "vm|1",
  ])("refuses %j", (name) => {
    expect(() => validDomain(name)).toThrow(InvalidCommandArgumentError);
  });
});

describe("validLibvirtUri", () => {
  test.each([
    "qemu:///system",
    "qemu:///session",
    "test:///tmp/ipt1a2b-x/hv1.xml",
    "test:///default",
    "qemu+ssh://root@hv1.example/system?keyfile=/etc/ippool/key&no_verify=1",
  ])("accepts %s", (uri) => {
    expect(validLibvirtUri(uri)).toBe(uri);
  });

  test.each([
    "",
    "system",
    "qemu:/system",
    "qemu:///system; reboot",
    "qemu:///$(reboot)",
    "qemu:///sys'tem",
    "qemu:///system\n",
    "qemu:///sys tem",
    "-c qemu:///system",
  ])("refuses %j", (uri) => {
    expect(() => validLibvirtUri(uri)).toThrow(InvalidCommandArgumentError);
  });

  test("refuses URIs longer than 1024 characters", () => {
    expect(() => validLibvirtUri(`qemu:///${"a".repeat(1020)}`)).toThrow(InvalidCommandArgumentError);
  });
});

test("the validation error is a 400 with a stable code", () => {
  const error = new InvalidCommandArgumentError("x");
  expect(error.status).toBe(400);
  expect(error.code).toBe("INVALID_ARGUMENT");
});
