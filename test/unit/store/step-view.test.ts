/**
 * The view a fleet daemon's step sees (store/postgres/view.ts): a range read after a write that
 * changed what it covers is refused (the step rule), and a new address is taken from the pages the
 * daemon holds, as the pool's summary flags them, before any page is claimed.
 */
import { describe, expect, test } from "bun:test";
import { PAGE_BITS, testBit } from "../../../src/pool/bitmap.ts";
import type { PageHolding } from "../../../src/store/postgres/pages.ts";
import { Answers, Missing, pageKey } from "../../../src/store/postgres/reads.ts";
import { StepView } from "../../../src/store/postgres/view.ts";

const WORDS = PAGE_BITS / 32;

/** A daemon holding `held` pages of pool "lab" (a /18: four pages), at epoch 1. */
function holding(held: readonly number[]): PageHolding {
  const pages = new Map(held.map((index) => [index, 1]));
  return { held: (pool) => (pool === "lab" ? pages : undefined), generation: () => 1 };
}

/** Answers as a transaction fetched them: the pool "lab", its full pages, and the pages given. */
function fetched(full: readonly number[], pages: Record<number, boolean> = {}): Answers {
  const answers = new Answers();
  answers.set("pools", new Map([["lab", { fingerprint: "f", cidr: "10.0.0.0/18" }]]));
  answers.set("fullPages\0lab", new Set(full));
  for (const [index, isFull] of Object.entries(pages)) {
    answers.set(pageKey("lab", Number(index)), { bits: new Uint32Array(WORDS), full: isFull, version: 1 });
  }
  return answers;
}

const record = { ip: 0x0a000005, createdAt: 0 };

describe("a step's range reads", () => {
  test("a pool's allocations cannot be listed after the step wrote one of them", () => {
    const answers = fetched([]);
    answers.set("allocations\0lab", []);
    answers.set("allocation\0lab\0vm-1", undefined);
    const view = new StepView(answers, holding([]));
    expect([...view.allocationEntries("lab")]).toEqual([]);
    view.putAllocation("lab", "vm-1", record);
    expect(() => view.allocationEntries("lab")).toThrow("after writing to it");
  });

  test("an address written makes the pool's address ranges stale, not its pages or another pool's rows", () => {
    const answers = fetched([]);
    answers.set("pageIndexes\0lab", [0]);
    answers.set("allocations\0other", []);
    const view = new StepView(answers, holding([]));
    view.putAddress("lab", record.ip, "vm-1");
    expect(() => view.addresses("lab", 0, 2 ** 32 - 1)).toThrow("after writing to it");
    expect([...view.pageIndexes("lab")]).toEqual([0]);
    expect([...view.allocationEntries("other")]).toEqual([]);
  });

  test("a count written changes no range, and an EIP written changes every EIP listing", () => {
    const answers = fetched([]);
    answers.set("counts\0lab", { allocated: 0, cursor: 0 });
    answers.set("allEips", []);
    answers.set("eip\0eip-1", undefined);
    const view = new StepView(answers, holding([]));
    view.putCounters("lab", { allocated: 1, cursor: 6 });
    expect([...view.allEips()]).toEqual([]);
    view.removeEip({ id: "eip-1" } as Parameters<StepView["removeEip"]>[0]);
    expect(() => view.allEips()).toThrow("after writing to it");
  });
});

describe("the pages a new address is taken from", () => {
  test("are the held pages the summary does not mark full, the freshest flag winning", () => {
    // Page 1 is on the list of full pages but was read since with a free address; page 2 the reverse.
    const view = new StepView(fetched([1, 3], { 1: false, 2: true }), holding([0, 1, 2, 3]));
    const pages = view.pagesToAllocateFrom("lab") as Uint32Array;
    expect([0, 1, 2, 3].filter((index) => testBit(pages, index))).toEqual([0, 1]);
  });

  test("a held page this step filled is no longer one of them", () => {
    const view = new StepView(fetched([], { 0: false, 1: false }), holding([0, 1]));
    view.putSummary("lab", Uint32Array.of(0b1110));
    const pages = view.pagesToAllocateFrom("lab") as Uint32Array;
    expect([0, 1, 2, 3].filter((index) => testBit(pages, index))).toEqual([1]);
  });

  test("holding none with a free address, the daemon has a page claimed first", () => {
    const view = new StepView(fetched([0]), holding([0]));
    let missing: unknown;
    try {
      view.pagesToAllocateFrom("lab");
    } catch (error) {
      missing = error;
    }
    expect(missing).toBeInstanceOf(Missing);
    expect((missing as Missing).read).toEqual({ kind: "claim", pool: "lab", generation: 1 });
  });

  test("with a claim already made and nothing held free, any page with a free address will do", () => {
    const answers = fetched([0, 2]);
    answers.set("claim\0lab\x001", true);
    const pages = new StepView(answers, holding([0])).pagesToAllocateFrom("lab") as Uint32Array;
    expect([0, 1, 2, 3].filter((index) => testBit(pages, index))).toEqual([1, 3]);
  });
});
