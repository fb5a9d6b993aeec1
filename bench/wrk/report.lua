-- Shared by the bench scripts: a per-thread id for unique vm_ids, and one machine-readable
-- summary line (BENCH key=value ...) that bench/run.sh parses. Latencies in milliseconds.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

-- Set by bench/run.sh so vm_ids never repeat across runs on one data directory.
run_tag = os.getenv("BENCH_TAG") or "b"
json_headers = { ["Content-Type"] = "application/json" }

function vm_id(n)
  return run_tag .. "-t" .. tid .. "-" .. n
end

function done(summary, latency, _requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50=%.3f p90=%.3f p99=%.3f max=%.3f non2xx=%d sockerr=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
