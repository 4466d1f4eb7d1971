#!/usr/bin/env bash
# Load test of `gradcam serve` on loopback (not part of CI): CLIENTS concurrent clients (default 32) send
# requests back to back for DURATION seconds (default 60); prints requests per second, latency percentiles,
# answers by status, and the server's peak resident memory (VmHWM), with the machine's load before and after.
#
# usage: scripts/load-test.sh            env: CLIENTS, DURATION, QUERY (default /v1/explain?method=gradcam),
#                                             PHOTO (default chelsea.png of the examples), MODEL, SERVE_ARGS
set -euo pipefail
cd "$(dirname "$0")/.."
home="${GRADCAM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gradcam}"
clients=${CLIENTS:-32}
duration=${DURATION:-60}
query=${QUERY:-/v1/explain?method=gradcam}
photo=${PHOTO:-$home/examples/chelsea.png}
model=${MODEL:-efficientnet_lite0}
[ -s "$photo" ] || { echo "no $photo: run scripts/fetch-assets.sh" >&2; exit 1; }
cargo build --release -p gradcam-cli --quiet
log=$(mktemp)
# shellcheck disable=SC2086
target/release/gradcam serve --model "$model" --bind 127.0.0.1:0 ${SERVE_ARGS:-} >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do grep -q 'http://' "$log" && break; sleep 0.2; done
url=$(grep -o 'http://[0-9.]*:[0-9]*' "$log" | head -n1)
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$log" >&2; exit 1; }
echo "$(head -n1 "$log")"
echo "load before: $(uptime)"
python3 - "$url" "$query" "$photo" "$clients" "$duration" "$pid" <<'PY'
import http.client, sys, threading, time, urllib.parse
url, query, photo, clients, duration, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
host = urllib.parse.urlparse(url)
body = open(photo, "rb").read()
lat, statuses, failures = [], {}, []
lock = threading.Lock()
start = time.monotonic()
stop = start + duration

def client():
    conn = None
    while time.monotonic() < stop:
        t = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=300)
            conn.request("POST", query, body=body, headers={"Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            r.read()
            code = r.status
            if r.getheader("Connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception as e:  # a failure of the connection, not an HTTP status
            code = "error"
            with lock:
                failures.append(repr(e))
            if conn: conn.close()
            conn = None
        with lock:
            statuses[code] = statuses.get(code, 0) + 1
            if code == 200:
                lat.append(time.monotonic() - t)

threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - start
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")
hwm = next((l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")), "?")
n = sum(statuses.values())
print(f"{clients} clients, {elapsed:.0f} s, POST {query} with {photo.rsplit('/', 1)[-1]} ({len(body)} bytes)")
print(f"requests: {n}, {len(lat) / elapsed:.1f} answered 200 per second")
print(f"latency of 200s (ms): p50 {pct(50):.0f}  p90 {pct(90):.0f}  p99 {pct(99):.0f}  max {lat[-1] * 1000 if lat else float('nan'):.0f}")
print("answers by status:", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
if failures: print("connection failures, first:", failures[0])
print(f"server peak resident memory (VmHWM): {int(hwm) / 1024:.0f} MB" if hwm != "?" else "server peak memory: unknown")
PY
echo "load after: $(uptime)"
