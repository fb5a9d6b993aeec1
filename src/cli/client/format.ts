/** Human output: aligned columns for lists, `key  value` lines for one object. */

export type Row = Record<string, unknown>;

function cell(value: unknown): string {
  if (value === undefined || value === null) return "-";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

export function table(rows: readonly Row[], columns: readonly string[]): string {
  if (rows.length === 0) return "(none)\n";
  const cells = rows.map((row) => columns.map((column) => cell(row[column])));
  const header = columns.map((column) => column.toUpperCase());
  const widths = columns.map((_, i) => Math.max(header[i]?.length ?? 0, ...cells.map((line) => line[i]?.length ?? 0)));
  const line = (values: readonly string[]) =>
    values
      .map((value, i) => (i === values.length - 1 ? value : value.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(header), ...cells.map(line)].join("\n")}\n`;
}

export function record(row: Row, keys: readonly string[] = Object.keys(row)): string {
  const present = keys.filter((key) => row[key] !== undefined);
  const width = Math.max(...present.map((key) => key.length));
  return `${present.map((key) => `${key.padEnd(width)}  ${cell(row[key])}`).join("\n")}\n`;
}
