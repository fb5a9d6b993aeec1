/**
 * A Prometheus histogram whose series are looked up once and then observed into plain arrays.
 * prom-client's Histogram checks and hashes the labels on every observation, a cost every request
 * paid for its duration; here a series is found by one string key and an observation is a bucket
 * search and three additions. It registers itself in a prom-client registry as any metric does
 * and is exposed in the same text format.
 */
import type { Metric, Registry } from "prom-client";

export type Labels = Readonly<Record<string, string>>;

export class SeriesHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly series = new Map<string, HistogramSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** The series of `key`, made with `labels()` the first time (the caller keeps keys to a bounded set). */
  seriesOf(key: string, labels: () => Labels): HistogramSeries {
    let found = this.series.get(key);
    if (found === undefined) {
      found = new HistogramSeries(labels(), this.buckets);
      this.series.set(key, found);
    }
    return found;
  }

  reset(): void {
    this.series.clear();
  }

  /** What prom-client's registry exposes: cumulative buckets, +Inf, sum and count per series. */
  get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const { labels, counts, sum, count } of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += counts[i] as number;
        values.push({ labels: { ...labels, le: bound }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...labels, le: "+Inf" }, value: count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...labels }, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class HistogramSeries {
  /** Observations per bucket, not cumulative; those above the last bound are only in `count`. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        this.counts[i] = (this.counts[i] as number) + 1;
        return;
      }
    }
  }
}
