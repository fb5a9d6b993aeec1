/** Reading `virsh list --all --uuid --name` output (the host suites run the real virsh). */
import { describe, expect, test } from "bun:test";
import { parseDomainList } from "../../../src/hosts/libvirt.ts";

describe("parseDomainList", () => {
  test("one UUID NAME line per domain, UUIDs lower-cased, the trailing blank line skipped", () => {
    const output = [
      "1b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa web-1",
      "0B6F4AD2-5BD5-4C69-9A3C-3B0C8D0A11AA   db-1",
      "7d1e44c0-1f5b-4c4f-8a0e-2f8e6a3b9c01 name with spaces",
      "",
      "",
    ].join("\n");
    expect(parseDomainList(output)).toEqual([
      { uuid: "1b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa", name: "web-1" },
      { uuid: "0b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa", name: "db-1" },
      { uuid: "7d1e44c0-1f5b-4c4f-8a0e-2f8e6a3b9c01", name: "name with spaces" },
    ]);
  });

  test("no domains: an empty list", () => {
    expect(parseDomainList("\n")).toEqual([]);
    expect(parseDomainList("")).toEqual([]);
  });

  test("any other line is returned instead of a list (an old virsh printing only UUIDs, a warning)", () => {
    expect(parseDomainList("1b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa\n")).toBe("1b6f4ad2-5bd5-4c69-9a3c-3b0c8d0a11aa");
    expect(parseDomainList("web-1\nweb-2\n")).toBe("web-1");
    expect(parseDomainList(" Id   Name   State\n")).toBe("Id   Name   State");
  });
});
