/**
 * Reading Prometheus text exposition in tests, and running the real `promtool` (Debian package
 * `prometheus`). A missing promtool fails the test that needs it, with the reason: never a skip.
 */
import { sh } from "./processes.ts";

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Samples of an exposition (comments skipped). Label values are unescaped (`\\`, `\"`, `\n`). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1] as string] = (label[2] as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

/** Samples of that name whose labels include all of `labels`. */
export function samplesOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The one sample of that name and labels; throws when there is none or more than one. */
export function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samplesOf(samples, name, labels);
  if (found.length !== 1) {
    throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${found.length}`);
  }
  return (found[0] as Sample).value;
}

/**
 * Sample names an exposition can produce, from its `# TYPE` lines: a histogram `x` gives
 * `x_bucket`, `x_sum` and `x_count`, anything else its own name.
 */
export function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = match as unknown as [string, string, string];
    if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(name + suffix);
    else if (type === "summary") for (const suffix of ["", "_sum", "_count"]) names.add(name + suffix);
    else names.add(name);
  }
  return names;
}

export interface PromtoolResult {
  readonly code: number;
  readonly output: string;
}

/** Runs `promtool ARGS` with `stdin`; throws a clear error when promtool is not installed. */
export async function promtool(args: readonly string[], stdin?: string): Promise<PromtoolResult> {
  const path = Bun.which("promtool");
  if (!path) {
    throw new Error(
      "promtool is not installed: it comes with the Debian package `prometheus` " +
        "(`make test` installs it as root; or apt-get install --no-install-recommends prometheus)",
    );
  }
  const { code, stdout, stderr } = await sh([path, ...args], {
    allowFail: true,
    ...(stdin === undefined ? {} : { stdin }),
  });
  return { code, output: (stdout + stderr).trim() };
}
