/** Line-oriented logging to stdout (the journal), as text or JSON lines. */
import type { LogFormat, LogLevel } from "../config/config.ts";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, string | number | boolean | null | undefined>;

export class Logger {
  constructor(
    private readonly format: LogFormat,
    private readonly level: LogLevel,
    private readonly write: (line: string) => void = (line) => process.stdout.write(line),
  ) {}

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

  private log(level: LogLevel, message: string, fields: Fields = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    if (this.format === "json") {
      this.write(`${JSON.stringify({ time, level, msg: message, ...fields })}\n`);
      return;
    }
    const extra = Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .map(
        ([key, value]) => `${key}=${typeof value === "string" && /[\s"=]/.test(value) ? JSON.stringify(value) : value}`,
      )
      .join(" ");
    this.write(`${time} ${level.toUpperCase()} ${message}${extra ? ` ${extra}` : ""}\n`);
  }
}
