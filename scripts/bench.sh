#!/usr/bin/env bash
# Full-load benchmark: 1,000,000 sysbench rows (4 tables x 250k) copied from
# the sandbox source to fresh databases on the sandbox target, in one run, by
#   - ferry (4 threads), with the target's binlog on, and with
#     [full] target_binlog = false (as myloader's default),
#   - mydumper -t 4 + myloader -t 4 (end to end: dump, then load),
#     once as myloader defaults (target binlog off) and once with -e
#     (binlog on, as ferry and mysqldump write it),
#   - mysqldump | mariadb.
# Prints rows/s of each, ratios, and ferry's peak RSS.
#
#   scripts/bench.sh            (ROWS=250000 TABLES=4 THREADS=4 ROUNDS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

ROWS=${ROWS:-250000}
TABLES=${TABLES:-4}
THREADS=${THREADS:-4}
ROUNDS=${ROUNDS:-1}
TOTAL=$((ROWS * TABLES))

missing=()
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server mariadb-client)
command -v sysbench >/dev/null 2>&1 || missing+=(sysbench)
command -v mydumper >/dev/null 2>&1 || missing+=(mydumper)
[ -x /usr/bin/time ] || missing+=(time)
command -v bc >/dev/null 2>&1 || missing+=(bc)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --quiet
FERRY=$PWD/target/release/ferry
scripts/sandbox.sh start >/dev/null
eval "$(scripts/sandbox.sh env)"
PW=$FERRY_SRC_PASSWORD
sql() { scripts/sandbox.sh sql "$@"; }
WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

have=$(sql source -N -e "SELECT COALESCE(SUM(TABLE_ROWS),0) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'" 2>/dev/null || echo 0)
count=$(sql source -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'" || echo 0)
if [ "$count" != "$TABLES" ] || [ "$(sql source -N -e "SELECT COUNT(*) FROM sbtest.sbtest1" 2>/dev/null || echo 0)" != "$ROWS" ]; then
  echo "== preparing sysbench data: $TABLES x $ROWS rows (have ~$have)"
  sql source -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
  sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SOURCE_PORT" \
    --mysql-user=ferry --mysql-password="$PW" --mysql-db=sbtest \
    --tables="$TABLES" --table-size="$ROWS" --threads=2 prepare >/dev/null
fi
# Warm the source's buffer pool so the first contender is not penalised.
for i in $(seq 1 "$TABLES"); do sql source -N -e "CHECKSUM TABLE sbtest.sbtest$i" >/dev/null; done

reset_target() { sql target -e "DROP DATABASE IF EXISTS $1"; }
now() { date +%s.%N; }
declare -A SECS

run_ferry() { # run_ferry NAME TARGET_BINLOG
  local name=$1 binlog=$2
  reset_target "sbtest_$name"
  cat >"$WORK/job.toml" <<EOF
name = "bench"
mode = "full"
[source]
host = "127.0.0.1"
port = $SOURCE_PORT
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
[target]
host = "127.0.0.1"
port = $TARGET_PORT
user = "ferry"
password_env = "FERRY_DST_PASSWORD"
[[select]]
database = "sbtest"
rename = "sbtest_$name"
[full]
threads = $THREADS
target_binlog = $binlog
EOF
  rm -rf "$WORK/state"
  local t0; t0=$(now)
  /usr/bin/time -f "%M" -o "$WORK/rss" "$FERRY" --state "$WORK/state" run "$WORK/job.toml" 2>"$WORK/ferry.err" \
    || { cat "$WORK/ferry.err"; exit 1; }
  SECS[$name]=$(echo "$(now) - $t0" | bc)
  local rss; rss=$(cat "$WORK/rss")
  [ "${RSS_KB:-0}" -ge "$rss" ] || RSS_KB=$rss
}

run_mydumper() { # run_mydumper NAME [myloader flags]
  local name=$1; shift
  reset_target "sbtest_$name"
  rm -rf "$WORK/dump"
  local t0; t0=$(now)
  mydumper -h 127.0.0.1 -P "$SOURCE_PORT" -u ferry -p "$PW" -B sbtest -t "$THREADS" -o "$WORK/dump" >/dev/null
  myloader -h 127.0.0.1 -P "$TARGET_PORT" -u ferry -p "$PW" -d "$WORK/dump" -B "sbtest_$name" -t "$THREADS" "$@" >/dev/null
  SECS[$name]=$(echo "$(now) - $t0" | bc)
}

run_mysqldump() {
  reset_target sbtest_dump
  sql target -e "CREATE DATABASE sbtest_dump"
  local t0; t0=$(now)
  mariadb-dump --no-defaults -h 127.0.0.1 -P "$SOURCE_PORT" -u ferry -p"$PW" --single-transaction sbtest \
    | mariadb --no-defaults -h 127.0.0.1 -P "$TARGET_PORT" -u ferry -p"$PW" sbtest_dump
  SECS[mysqldump]=$(echo "$(now) - $t0" | bc)
}

check_copy() { # the copy is complete and equal
  local db=$1
  for i in $(seq 1 "$TABLES"); do
    a=$(sql source -N -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
    b=$(sql target -N -e "CHECKSUM TABLE $db.sbtest$i" | cut -f2)
    [ "$a" = "$b" ] || { echo "MISMATCH: $db.sbtest$i" >&2; exit 1; }
  done
}

declare -A BEST
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  run_ferry ferry true;            check_copy sbtest_ferry
  run_ferry ferry_nobinlog false;  check_copy sbtest_ferry_nobinlog
  run_mydumper myloader;           check_copy sbtest_myloader
  run_mydumper myloader_binlog -e; check_copy sbtest_myloader_binlog
  run_mysqldump;                   check_copy sbtest_dump
  for k in "${!SECS[@]}"; do
    if [ -z "${BEST[$k]:-}" ] || [ "$(echo "${SECS[$k]} < ${BEST[$k]}" | bc)" = 1 ]; then BEST[$k]=${SECS[$k]}; fi
  done
  for k in ferry ferry_nobinlog myloader myloader_binlog mysqldump; do reset_target "sbtest_${k/mysqldump/dump}"; done
done

rate() { echo "$TOTAL / ${BEST[$1]}" | bc; }
row() { # row LABEL KEY [COMPARED-TO]
  local ratio="" 
  [ -n "${3:-}" ] && ratio="$(echo "scale=2; ${BEST[$2]} / ${BEST[$3]}" | bc)x"
  printf '%-44s %8.2f %10d %12s\n' "$1" "${BEST[$2]}" "$(rate "$2")" "$ratio"
}
echo
echo "Full load of $TOTAL rows ($TABLES sysbench tables x $ROWS), best of $ROUNDS rounds,"
echo "$(nproc) cores, source and target servers on this machine"
echo
echo "target binlog ON (every row also written to the target's binlog):"
printf '%-44s %8s %10s %12s\n' "" seconds rows/s "ferry faster"
row "ferry ($THREADS threads)" ferry
row "mydumper -t $THREADS + myloader -t $THREADS -e" myloader_binlog ferry
row "mysqldump | mariadb" mysqldump ferry
echo
echo "target binlog OFF:"
row "ferry ($THREADS threads, target_binlog = false)" ferry_nobinlog
row "mydumper -t $THREADS + myloader -t $THREADS" myloader ferry_nobinlog
echo
echo "ferry peak RSS: $((RSS_KB / 1024)) MiB"
