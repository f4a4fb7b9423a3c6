#!/usr/bin/env bash
# The cost of reading the API key with kong.request.get_headers() instead of get_header(name),
# under Kong's own client (kongrig): a test plugin makes the success path's 4 RPCs either way.
# Needs a release build with the test hooks (cargo build --release -p ghasi-plugin-server --features
# test-hooks: the test plugin) and a kongrig (GHASI_KONG_RIG or ../shared/kongrig).
# ROUNDS (3), DUR (6s) and KONG_VERSION (3.9.3) tune it; prints one line per round and mode.
set -uo pipefail
RIG=${GHASI_KONG_RIG:-$(cd "$(dirname "$0")/../../shared/kongrig" 2>/dev/null && pwd)}
[ -x "$RIG/run.sh" ] || { echo "set GHASI_KONG_RIG to a kongrig folder (Kong's own client in nginx; its setup.sh installs it)" >&2; exit 2; }
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ghasi-plugin-server}
export KONGRIG_STATE=${KONGRIG_STATE:-$(cd "$(dirname "$0")/.." && pwd)/target/kongrig}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-6s}; KV=${KONG_VERSION:-3.9.3}
tail='{"set_headers":{"X-Account-Id":"acc_1","X-User-Id":"usr_1","X-Consumer-Username":"acc_1","X-Credential-Identifier":"key_1","x-api-key":null,"X-Consumer-ID":null,"X-Consumer-Custom-ID":null,"X-Consumer-Groups":null,"X-Anonymous-Consumer":null,"X-Authenticated-Groups":null,"X-Authenticated-Scope":null,"X-Authenticated-Userid":null}},{"call":"kong.ctx.shared.set","args":["authenticated_groups",["ghasi-authenticated"]]}'
declare -A CFG=(
  [get_header]="{\"steps\":[{\"read\":\"x-api-key\"},$tail]}"
  [get_headers]="{\"steps\":[{\"call\":\"kong.request.get_headers\"},$tail]}"
)
H=(-H 'x-api-key: k_live_0123456789abcdef0123456789abcdef' -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36'
   -H 'Accept: application/json' -H 'Accept-Encoding: gzip, deflate, br' -H 'Accept-Language: en-US,en;q=0.9'
   -H 'Content-Type: application/json' -H 'X-Request-Id: 7f1c2a9e-2b1d-4c55-9f0e-1f2a3b4c5d6e'
   -H 'X-Forwarded-For: 203.0.113.7' -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')
cpu() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }
printf 'mode\tround\treq_s\tp99\tserver_us_req\tnginx_us_req\n'
for r in $(seq 1 "$ROUNDS"); do
  for mode in get_header get_headers; do
    P=$KONGRIG_STATE/getheaders-$mode; rm -rf "$P"; mkdir -p "$P"
    S=$P/s.sock
    PREFIX=$P SOCKET=$S PLUGIN=ghasi-test-script KONG_VERSION=$KV PORT=8190 UPSTREAM_PORT=8191 \
      CONFIG_JSON="${CFG[$mode]}" START_CMD="GHASI_TEST_PLUGINS=1 GHASI_LOG=warn $BIN --socket $S" \
      QUERY_CMD="env GHASI_TEST_PLUGINS=1 $BIN --dump --plugin ghasi-test-script" \
      "$RIG/run.sh" > "$P/run.out" 2>&1 || { cat "$P/run.out"; exit 1; }
    sleep 1
    wrk -t2 -c50 -d2s "${H[@]}" http://127.0.0.1:8190/bench > /dev/null 2>&1   # warm-up
    spid=$(pgrep -f -- "^$BIN --socket $S" | head -1)
    wpids=$(pgrep -P "$(cat $P/nginx.pid)")
    s0=$(cpu "$spid"); n0=0; for w in $wpids; do n0=$((n0 + $(cpu $w))); done
    out=$(wrk -t2 -c50 -d"$DUR" --latency "${H[@]}" http://127.0.0.1:8190/bench)
    s1=$(cpu "$spid"); n1=0; for w in $wpids; do n1=$((n1 + $(cpu $w))); done
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    tck=$(getconf CLK_TCK)
    printf '%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\n' $mode $r $rps $p99 \
      "$(echo "($s1-$s0)*1000000/$tck/$reqs" | bc -l)" "$(echo "($n1-$n0)*1000000/$tck/$reqs" | bc -l)" "${non2xx:+non2xx=$non2xx}"
    PREFIX=$P "$RIG/stop.sh" > /dev/null 2>&1
  done
done
