#!/usr/bin/env bash
# Tests of scripts/quickstart itself (run by scripts/test after `scripts/quickstart --check`,
# so the binaries are built): a port already taken stops it with a clear error, a component
# that dies at start stops it with that component's log, and Ctrl-C stops everything and
# exits 0, leaving plain-text logs. Every port is a free one picked by the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ports() { echo "--port $(free_port) --auth-port $(free_port) --echo-port $(free_port) --ops-port $(free_port)"; }
out=$(mktemp)
holder=
cleanup() {
  [ -n "$holder" ] && kill "$holder" 2>/dev/null
  rm -f "$out"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; sed 's/^/  | /' "$out"; exit 1; }

echo "== a port already in use stops the quick start with its error"
taken=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(120)' "$taken" &
holder=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$taken") 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2046
if timeout 300 scripts/quickstart --check $(ports | sed "s/--port [0-9]*/--port $taken/") >"$out" 2>&1; then
  fail "the quick start passed with port $taken taken"
fi
grep -q "port $taken (front) is already in use by another process; pick another with --port PORT" "$out" ||
  fail "no clear error for the taken port"
kill "$holder"; holder=
echo "ok"

echo "== a component that dies at start stops the quick start with its log"
# An invalid setting makes the plugin server refuse to start (the buffer budget must hold
# at least one largest frame).
# shellcheck disable=SC2046
if GHASI_BUFFER_BUDGET_BYTES=1 timeout 300 scripts/quickstart --check $(ports) >"$out" 2>&1; then
  fail "the quick start passed with a plugin server that cannot start"
fi
grep -q "quickstart: plugin-server failed to start" "$out" && grep -q -- "--buffer-budget-bytes" "$out" ||
  fail "the plugin server's failure was not reported with its log"
echo "ok"

echo "== Ctrl-C stops everything and exits 0"
args=$(ports)
# Job control gives the quick start its own process group, like a terminal's foreground job
# (and keeps SIGINT from being ignored in a background job); Ctrl-C signals the whole group.
set -m
# shellcheck disable=SC2086
scripts/quickstart $args >"$out" 2>&1 &
qs=$!
set +m
for _ in $(seq 1 1200); do
  grep -q "Ctrl-C stops everything" "$out" && break
  kill -0 "$qs" 2>/dev/null || fail "the quick start exited before it was ready"
  sleep 0.1
done
grep -q "Ctrl-C stops everything" "$out" || fail "the quick start never became ready"
kill -INT -- "-$qs"
status=0
for _ in $(seq 1 300); do kill -0 "$qs" 2>/dev/null || break; sleep 0.1; done
kill -0 "$qs" 2>/dev/null && fail "still running 30 s after Ctrl-C"
wait "$qs" || status=$?
[ "$status" = 0 ] || fail "exit status $status after Ctrl-C, expected 0"
grep -q "no such job" "$out" && fail "bash complained about jobs"
for flag_port in $args; do
  case $flag_port in --*) continue ;; esac
  if (exec 3<>"/dev/tcp/127.0.0.1/$flag_port") 2>/dev/null; then fail "port $flag_port still served after Ctrl-C"; fi
done
if grep -l $'\e\[' target/quickstart/*.log; then fail "ANSI colour codes in the logs above"; fi
echo "ok"
echo "quickstart script tests: 3 passed"
