import { expect, test } from "bun:test";
import { Logger } from "../../../src/log/logger.ts";

/** Every line a logger writes, once flushed. */
function linesOf(format: "text" | "json", write: (logger: Logger) => void): string[] {
  let written = "";
  const logger = new Logger(format, "info", (text) => {
    written += text;
  });
  write(logger);
  logger.flush();
  return written.split("\n").filter(Boolean);
}

/** A line without its leading timestamp (text) or time field (json). */
function timeless(format: "text" | "json", line: string): unknown {
  if (format === "text") return line.slice(line.indexOf(" ") + 1);
  const { time: _time, ...rest } = JSON.parse(line);
  return rest;
}

test.each(["text", "json"] as const)("the request line reads as info('request', fields) does (%s)", (format) => {
  const cases: [string, string, number, number][] = [
    ["POST", "/api/v1/ip/allocate", 201, 0.83],
    ["GET", '/api/v1/ip/a b="c"', 404, 12],
  ];
  const direct = linesOf(format, (logger) => {
    for (const [method, path, status, ms] of cases) logger.request(method, path, status, ms);
  });
  const general = linesOf(format, (logger) => {
    for (const [method, path, status, ms] of cases) logger.info("request", { method, path, status, ms });
  });
  expect(direct.map((line) => timeless(format, line))).toEqual(general.map((line) => timeless(format, line)));
  expect(direct).toHaveLength(2);
});

test("below its level the request line is not written", () => {
  let written = "";
  const logger = new Logger("text", "warn", (text) => {
    written += text;
  });
  logger.request("GET", "/api/v1/health", 200, 0.1);
  logger.flush();
  expect(written).toBe("");
});
