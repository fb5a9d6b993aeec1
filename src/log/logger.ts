/**
 * Line-oriented logging to stdout (the journal), as text or JSON lines. Lines written in one
 * event-loop turn go out in one write: under load that is one syscall per turn, not per request.
 */
import type { LogFormat, LogLevel } from "../config/config.ts";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, string | number | boolean | null | undefined>;

export class Logger {
  private pending = "";

  constructor(
    private format: LogFormat,
    private level: LogLevel,
    private readonly write: (text: string) => void = (text) => process.stdout.write(text),
  ) {}

  /** A reload's new settings (SIGHUP): lines from now on use them. */
  reconfigure(format: LogFormat, level: LogLevel): void {
    this.format = format;
    this.level = level;
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level];
  }

  debug(message: string, fields?: Fields): void {
    this.log("debug", message, fields);
  }

  info(message: string, fields?: Fields): void {
    this.log("info", message, fields);
  }

  warn(message: string, fields?: Fields): void {
    this.log("warn", message, fields);
  }

  error(message: string, fields?: Fields): void {
    this.log("error", message, fields);
  }

  /**
   * The line every request writes, the same as `info("request", { method, path, status, ms })`;
   * in text it is formatted directly: the general field loop showed in profiles of allocation.
   */
  request(method: string, path: string, status: number, ms: number): void {
    if (!this.enabled("info")) return;
    if (this.format === "json") this.info("request", { method, path, status, ms });
    else this.append(`${now()} INFO request method=${token(method)} path=${token(path)} status=${status} ms=${ms}\n`);
  }

  /** Writes out buffered lines now (before exiting). */
  flush(): void {
    if (this.pending === "") return;
    const text = this.pending;
    this.pending = "";
    this.write(text);
  }

  private log(level: LogLevel, message: string, fields: Fields = {}): void {
    if (!this.enabled(level)) return;
    this.append(this.format === "json" ? jsonLine(level, message, fields) : textLine(level, message, fields));
  }

  private append(line: string): void {
    if (this.pending === "") setImmediate(() => this.flush());
    this.pending += line;
  }
}

let stampedAt = Number.NaN;
let stamp = "";

/** The time as ISO 8601 text, formatted once per millisecond: under load many lines share one. */
function now(): string {
  const ms = Date.now();
  if (ms !== stampedAt) {
    stampedAt = ms;
    stamp = new Date(ms).toISOString();
  }
  return stamp;
}

const LEVEL_TEXT: Record<LogLevel, string> = { debug: "DEBUG", info: "INFO", warn: "WARN", error: "ERROR" };
/** A value that would not read back as one token: quoted. */
const NEEDS_QUOTES = /[\s"=]/;

function jsonLine(level: LogLevel, message: string, fields: Fields): string {
  return `${JSON.stringify({ time: now(), level, msg: message, ...fields })}\n`;
}

function textLine(level: LogLevel, message: string, fields: Fields): string {
  let line = `${now()} ${LEVEL_TEXT[level]} ${message}`;
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined) continue;
    line += ` ${key}=${typeof value === "string" ? token(value) : value}`;
  }
  return `${line}\n`;
}

/** A string field's value as it is, or quoted when it would not read back as one token. */
function token(value: string): string {
  return NEEDS_QUOTES.test(value) ? JSON.stringify(value) : value;
}
