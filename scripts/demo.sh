#!/usr/bin/env bash
# The quick start: sandbox source and target servers with sample data, then a
# real Ferry job (precheck, schema, parallel full load) and the result; then
# a live sync job under a workload, watched in the console (on a terminal;
# without one, `ferry status` shows it).
#
# The servers keep running afterwards so you can look around:
#   scripts/sandbox.sh sql source   /   scripts/sandbox.sh sql target
#   scripts/sandbox.sh stop         (or destroy, to delete their data)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

if ! command -v mariadbd >/dev/null 2>&1; then
  echo "== installing mariadb-server"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi

echo "== building ferry (release)"
cargo build --release --quiet
FERRY=$PWD/target/release/ferry

echo "== starting sandbox servers"
scripts/sandbox.sh start
eval "$(scripts/sandbox.sh env)"
sql() { scripts/sandbox.sh sql "$@"; }

echo "== loading sample data into the source: shop (~385k rows) and Sakila"
sql source < testdata/demo/shop.sql
sql source < testdata/sakila/sakila-mv-schema.sql
sql source < testdata/sakila/sakila-mv-data.sql
sql target -e "DROP DATABASE IF EXISTS shop_copy; DROP DATABASE IF EXISTS sakila;"
STATE=$PWD/.sandbox/state
rm -rf "$STATE"

echo
echo "== ferry check jobs/demo.toml"
"$FERRY" --state "$STATE" check jobs/demo.toml

echo
echo "== ferry run jobs/demo.toml"
"$FERRY" --state "$STATE" run jobs/demo.toml

echo
echo "== the result: CHECKSUM TABLE on both sides"
printf '%-28s %12s %12s  %s\n' table source target ""
for t in shop.customers shop.orders shop.order_items shop.page_views \
         sakila.film sakila.rental sakila.payment sakila.customer; do
  dst=${t/shop./shop_copy.}
  a=$(sql source -N -e "CHECKSUM TABLE $t" | cut -f2)
  b=$(sql target -N -e "CHECKSUM TABLE $dst" | cut -f2)
  if [ "$a" = "$b" ]; then ok=same; else ok=DIFFERENT; fi
  printf '%-28s %12s %12s  %s\n' "$t" "$a" "$b" "$ok"
done
echo
echo "views, routines, triggers on the target:"
sql target -N -e "SELECT 'views', COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA='sakila'
  UNION ALL SELECT 'routines', COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='sakila'
  UNION ALL SELECT 'triggers', COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='sakila'"

echo
echo "== live: jobs/demo-sync.toml (full load, then the binlog) under a workload"
sql target -e "DROP DATABASE IF EXISTS shop_copy; DROP DATABASE IF EXISTS sakila;"
SYNC_STATE=$PWD/.sandbox/state-sync
rm -rf "$SYNC_STATE"
workload() { # a few hundred row changes a second on the source
  while :; do
    local id=$((RANDOM * 7 % 249000 + 1))
    sql source -e "UPDATE shop.orders SET total = total + 1 WHERE id BETWEEN $id AND $((id + 20));
      UPDATE shop.customers SET email = CONCAT('u', $id, '@example.com') WHERE id = $((id % 50000 + 1));" || true
    sleep 0.1
  done
}
workload & WORKLOAD=$!
trap 'kill $WORKLOAD 2>/dev/null || true' EXIT
if [ -t 0 ] && [ -t 1 ] && [ -z "${CI:-}" ]; then
  echo "   the console opens: Enter for a job's detail, p/r pause/resume, ? help;"
  echo "   q, then y, stops the job (it resumes from its checkpoint next time)"
  sleep 2
  "$FERRY" --state "$SYNC_STATE" run --console jobs/demo-sync.toml
else
  "$FERRY" --state "$SYNC_STATE" run jobs/demo-sync.toml 2>"$SYNC_STATE.err" &
  RUNNER=$!
  deadline=$((SECONDS + 120))
  until grep -q "streaming changes" "$SYNC_STATE.err" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { cat "$SYNC_STATE.err"; exit 1; }
    kill -0 $RUNNER 2>/dev/null || { cat "$SYNC_STATE.err"; exit 1; }
    sleep 0.2
  done
  sleep 6 # a few CDC samples
  echo "== ferry verify demo-sync (online, through the runner, while the workload writes)"
  "$FERRY" --state "$SYNC_STATE" verify demo-sync
  echo "(no terminal: ferry status instead of the console)"
  "$FERRY" --state "$SYNC_STATE" status || true
  "$FERRY" --state "$SYNC_STATE" stop
  wait $RUNNER
fi

echo
echo "Logs: $STATE/logs/ and $SYNC_STATE/logs/.  Servers still run: scripts/sandbox.sh stop"
