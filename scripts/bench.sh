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
# CDC apply: a BURST-second sysbench oltp_write_only burst (4 threads) is
# written to the source first; then, from the position before it, ferry
# (sync job, [cdc] start = that position; serial, then [cdc] threads = 4)
# and MariaDB's own replication (a third sandbox server, log_slave_updates
# on, as ferry's target writes its binlog too; single-threaded, then
# slave_parallel_threads=4 optimistic) each apply the backlog to a copy of
# the pre-burst data.
#
# Verification and subscriptions: see bench_verify and bench_subscribe.
#
# Into PostgreSQL: see bench_pg (not part of `all`): the full load against
# pgloader, then the CDC apply rate of a BURST-second burst.
#
#   scripts/bench.sh [full|cdc|verify|subscribe|pg|all]   (default all; ROWS=250000 TABLES=4
#                                      THREADS=4 ROUNDS=1 BURST=30)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

ROWS=${ROWS:-250000}
TABLES=${TABLES:-4}
THREADS=${THREADS:-4}
ROUNDS=${ROUNDS:-1}
BURST=${BURST:-30}
WHAT=${1:-all}
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
scripts/sandbox.sh start replica >/dev/null
eval "$(scripts/sandbox.sh env)"
PW=$FERRY_SRC_PASSWORD
sql() { scripts/sandbox.sh sql "$@"; }
WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

reset_target() { sql target -e "DROP DATABASE IF EXISTS $1"; }
now() { date +%s.%N; }

prepare_sbtest() {
have=$(sql source -N -e "SELECT COALESCE(SUM(TABLE_ROWS),0) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'" 2>/dev/null || echo 0)
count=$(sql source -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'" || echo 0)
if [ "$count" != "$TABLES" ] || [ "$(sql source -N -e "SELECT COUNT(*) FROM sbtest.sbtest1" 2>/dev/null || echo 0)" != "$ROWS" ]; then
  echo "== preparing sysbench data: $TABLES x $ROWS rows (have ~$have)"
  sql source -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
  sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SOURCE_PORT" \
    --mysql-user=ferry --mysql-password="$PW" --mysql-db=sbtest \
    --tables="$TABLES" --table-size="$ROWS" --threads=2 prepare >/dev/null
fi
}

bench_full() {
prepare_sbtest
# Warm the source's buffer pool so the first contender is not penalised.
for i in $(seq 1 "$TABLES"); do sql source -N -e "CHECKSUM TABLE sbtest.sbtest$i" >/dev/null; done

declare -A SECS

run_ferry() { # run_ferry NAME TARGET_BINLOG
  local name=$1 binlog=$2
  reset_target "sbtest_$name"
  { scripts/sandbox.sh job bench full sbtest "sbtest_$name"; cat <<EOF
[full]
threads = $THREADS
target_binlog = $binlog
EOF
  } >"$WORK/job.toml"
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
}


# ---------------------------------------------------------------- CDC apply
CDC_ROWS=${CDC_ROWS:-100000}
sbc() { # sysbench on the source's sbcdc database
  sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SOURCE_PORT" \
    --mysql-user=ferry --mysql-password="$PW" --mysql-db=sbcdc --tables=4 --table-size="$CDC_ROWS" "$@"
}

ferry_job() { # ferry_job NAME MODE PORT DB [extra toml]: from sbcdc
  scripts/sandbox.sh job "$1" "$2" sbcdc "$4" "$3"
  echo "${5:-}"
}

replica_status() { # prints "file pos" the replica has executed up to
  sql replica -e "SHOW SLAVE STATUS\G" | awk '/Relay_Master_Log_File/ {f=$2} / Exec_Master_Log_Pos/ {p=$2} END {print f, p}'
}

native_apply() { # native_apply THREADS: prints seconds to apply the burst
  local threads=$1
  # Back to the pre-burst data.
  sql replica -e "STOP SLAVE; RESET SLAVE ALL; DROP DATABASE IF EXISTS sbcdc; CREATE DATABASE sbcdc;" 2>/dev/null
  for i in 1 2 3 4; do
    sql replica -e "CREATE TABLE sbcdc.sbtest$i LIKE sbcdc_base.sbtest$i; INSERT INTO sbcdc.sbtest$i SELECT * FROM sbcdc_base.sbtest$i"
  done
  sql replica -e "SET GLOBAL slave_parallel_threads = $threads; SET GLOBAL slave_parallel_mode = 'optimistic';
    SET GLOBAL replicate_do_db = 'sbcdc';
    CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$SOURCE_PORT, MASTER_USER='ferry',
    MASTER_PASSWORD='$PW', MASTER_LOG_FILE='$P_FILE', MASTER_LOG_POS=$P_POS, MASTER_USE_GTID=no;"
  local t0; t0=$(now)
  sql replica -e "START SLAVE"
  while :; do
    read -r f p < <(replica_status) || true
    if [ "$f" = "$E_FILE" ] && [ "${p:-0}" -ge "$E_POS" ]; then break; fi
    sleep 0.05
  done
  echo "$(now) - $t0" | bc
  sql replica -e "STOP SLAVE"
}

ferry_apply() { # ferry_apply THREADS: prints seconds to apply the burst
  local threads=$1
  # Back to the pre-burst data (a copy kept on the replica).
  reset_target sbcdc_ferry
  sql target -e "DELETE FROM ferry_meta.checkpoints WHERE job LIKE 'bench-cdc%'" 2>/dev/null || true
  ferry_job bench-copy-back full "$TARGET_PORT" sbcdc_ferry >"$WORK/copy-back.toml"
  sed -i "s/^port = $SOURCE_PORT/port = $REPLICA_PORT/; s/^database = \"sbcdc\"/database = \"sbcdc_base\"/" "$WORK/copy-back.toml"
  rm -rf "$WORK/copy-back-state"
  "$FERRY" --state "$WORK/copy-back-state" run "$WORK/copy-back.toml" 2>/dev/null
  ferry_job bench-cdc sync "$TARGET_PORT" sbcdc_ferry "[cdc]
start = \"$P_FILE:$P_POS\"
threads = $threads" >"$WORK/cdc.toml"
  rm -rf "$WORK/cdc-state"
  local t0; t0=$(now)
  "$FERRY" --state "$WORK/cdc-state" run "$WORK/cdc.toml" 2>"$WORK/cdc.err" &
  local pid=$!
  # Done when every lane's marker is at the burst's end.
  while :; do
    read -r f p < <(sql target -N -e "SELECT binlog_file, binlog_pos FROM ferry_meta.checkpoints WHERE job LIKE 'bench-cdc%' ORDER BY binlog_file, binlog_pos LIMIT 1" 2>/dev/null || echo "x 0") || true
    if [ "$f" = "$E_FILE" ] && [ "${p:-0}" -ge "$E_POS" ]; then break; fi
    kill -0 $pid 2>/dev/null || { cat "$WORK/cdc.err" >&2; exit 1; }
    rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$(cat "$WORK/peak")" ] && echo "$rss" >"$WORK/peak"
    sleep 0.05
  done
  echo "$(now) - $t0" | bc
  kill -TERM $pid; wait $pid 2>/dev/null || true
  for i in 1 2 3 4; do
    a=$(sql source -N -e "CHECKSUM TABLE sbcdc.sbtest$i" | cut -f2)
    b=$(sql target -N -e "CHECKSUM TABLE sbcdc_ferry.sbtest$i" | cut -f2)
    [ "$a" = "$b" ] || { echo "MISMATCH after CDC ($threads threads): sbtest$i" >&2; exit 1; }
  done
}

bench_cdc() {
  echo "== CDC: preparing sbcdc (4 x $CDC_ROWS rows) and pre-burst copies"
  sql source -e "DROP DATABASE IF EXISTS sbcdc; CREATE DATABASE sbcdc"
  sbc --threads=2 prepare >/dev/null
  if [ "$(sql replica -N -e 'SELECT @@log_slave_updates')" != 1 ]; then
    echo "== restarting the sandbox replica with log_slave_updates"
    scripts/sandbox.sh stop >/dev/null; scripts/sandbox.sh start replica >/dev/null
  fi
  sql replica -e "STOP SLAVE; RESET SLAVE ALL" 2>/dev/null || true
  sql replica -e "DROP DATABASE IF EXISTS sbcdc_base; DROP DATABASE IF EXISTS sbcdc"
  ferry_job bench-copy-r full "$REPLICA_PORT" sbcdc_base >"$WORK/copy-r.toml"
  rm -rf "$WORK/copy-state"
  "$FERRY" --state "$WORK/copy-state" run "$WORK/copy-r.toml" 2>/dev/null
  echo 0 >"$WORK/peak"
  read -r P_FILE P_POS _ < <(sql source -N -e "SHOW MASTER STATUS")
  echo "== CDC: ${BURST}s sysbench oltp_write_only burst (4 threads) from $P_FILE:$P_POS"
  TXNS=$(sbc --threads=4 --time="$BURST" run | awk '/transactions:/ {print $2}')
  read -r E_FILE E_POS _ < <(sql source -N -e "SHOW MASTER STATUS")
  ROWS_CHANGED=$((TXNS * 4)) # oltp_write_only: 2 updates, 1 delete, 1 insert
  echo "   $TXNS transactions, $ROWS_CHANGED row changes, up to $E_FILE:$E_POS"

  # Decode rate: ferry's stream and decoder with a null sink, against
  # mariadb-binlog decoding the same range to /dev/null.
  ferry_job bench-decode sync "$TARGET_PORT" sbcdc_ferry >"$WORK/decode.toml"
  read -r _ _ decode_s < <("$FERRY" decode-bench "$WORK/decode.toml" "$P_FILE:$P_POS" "$E_FILE:$E_POS")
  local t0; t0=$(now)
  mariadb-binlog --no-defaults --read-from-remote-server -h 127.0.0.1 -P "$SOURCE_PORT" -u ferry -p"$PW" \
    --start-position="$P_POS" --stop-position="$E_POS" -v "$P_FILE" >/dev/null
  mysqlbinlog_s=$(echo "$(now) - $t0" | bc)

  ferry_s1=$(ferry_apply 1)
  ferry_s4=$(ferry_apply 4)

  local native1 native4
  native1=$(native_apply 0)
  native4=$(native_apply 4)
  crate() { echo "$ROWS_CHANGED / $1" | bc; }
  echo
  echo "CDC apply of a ${BURST}s sysbench oltp_write_only backlog ($TXNS transactions, $ROWS_CHANGED rows)"
  echo "(every applier writes its changes to its own binlog: the replica runs with log_slave_updates)"
  printf '%-44s %8s %10s %12s\n' "" seconds rows/s "ferry faster"
  printf '%-44s %8.2f %10d %12s\n' "MariaDB replica, single-threaded" "$native1" "$(crate "$native1")" ""
  printf '%-44s %8.2f %10d %11sx\n' "ferry, serial apply ([cdc] threads = 1)" "$ferry_s1" "$(crate "$ferry_s1")" "$(echo "scale=2; $native1 / $ferry_s1" | bc)"
  printf '%-44s %8.2f %10d %12s\n' "MariaDB replica, 4 threads optimistic" "$native4" "$(crate "$native4")" ""
  printf '%-44s %8.2f %10d %11sx\n' "ferry, parallel apply ([cdc] threads = 4)" "$ferry_s4" "$(crate "$ferry_s4")" "$(echo "scale=2; $native4 / $ferry_s4" | bc)"
  echo "ferry peak RSS while applying: $(($(cat "$WORK/peak") / 1024)) MiB (its time includes start-up and precheck)"
  echo
  echo "Binlog decode rate over the same range (no apply)"
  printf '%-44s %8s %10s %12s\n' "" seconds rows/s "ferry faster"
  printf '%-44s %8.2f %10d %12s\n' "mariadb-binlog --read-from-remote-server -v" "$mysqlbinlog_s" "$(crate "$mysqlbinlog_s")" ""
  printf '%-44s %8.2f %10d %11sx\n' "ferry stream + decode, null sink" "$decode_s" "$(crate "$decode_s")" "$(echo "scale=2; $mysqlbinlog_s / $decode_s" | bc)"
}

# ------------------------------------------------------------ verification
# The 1M-row sysbench set on the source and a copy on the target, compared
# by ferry verify (checksum mode, offline), by pt-table-checksum-style
# chunked CRC32 queries (the same ranges, run on both servers at once), and
# by CHECKSUM TABLE on both servers at once. Best of VROUNDS (default 3).
bench_verify() {
  prepare_sbtest
  local rounds=${VROUNDS:-3}
  local tables=""; for i in $(seq 1 "$TABLES"); do tables="$tables${tables:+, }DB.sbtest$i"; done
  scripts/sandbox.sh job bench-verify full sbtest sbtest_verify >"$WORK/vjob.toml"
  if [ "$(sql target -N -e "SELECT COUNT(*) FROM sbtest_verify.sbtest$TABLES" 2>/dev/null || echo 0)" != "$ROWS" ]; then
    echo "== copying the set to the target (sbtest_verify)"
    reset_target sbtest_verify
    rm -rf "$WORK/vstate"
    "$FERRY" --state "$WORK/vstate" run "$WORK/vjob.toml" 2>/dev/null
  fi
  # pt-table-checksum's chunk query, over 20000-row id ranges.
  local pt="$WORK/pt.sql"; : >"$pt"
  for i in $(seq 1 "$TABLES"); do
    for lo in $(seq 0 20000 $((ROWS - 1))); do
      echo "SELECT COUNT(*), COALESCE(LOWER(CONV(BIT_XOR(CAST(CRC32(CONCAT_WS('#', id, k, c, pad)) AS UNSIGNED)), 10, 16)), 0) FROM DB.sbtest$i FORCE INDEX(PRIMARY) WHERE id > $lo AND id <= $((lo + 20000));" >>"$pt"
    done
  done
  for side in source target; do # warm both buffer pools
    db=sbtest; [ $side = target ] && db=sbtest_verify
    sql $side -N -e "CHECKSUM TABLE ${tables//DB/$db}" >/dev/null
  done
  local best_f="" best_c="" best_p="" t0 t
  for r in $(seq 1 "$rounds"); do
    rm -rf "$WORK/vstate2"
    t0=$(now)
    /usr/bin/time -f "%M" -o "$WORK/vrss" "$FERRY" --state "$WORK/vstate2" verify "$WORK/vjob.toml" >"$WORK/verify.out" 2>&1 \
      || { cat "$WORK/verify.out"; echo "ferry verify found differences" >&2; exit 1; }
    t=$(echo "$(now) - $t0" | bc); if [ -z "$best_f" ] || [ "$(echo "$t < $best_f" | bc)" = 1 ]; then best_f=$t; fi
    t0=$(now)
    sql source -N -e "CHECKSUM TABLE ${tables//DB/sbtest}" >"$WORK/cs.s" &
    sql target -N -e "CHECKSUM TABLE ${tables//DB/sbtest_verify}" >"$WORK/cs.t" &
    wait
    t=$(echo "$(now) - $t0" | bc); if [ -z "$best_c" ] || [ "$(echo "$t < $best_c" | bc)" = 1 ]; then best_c=$t; fi
    t0=$(now)
    sed 's/DB\./sbtest./' "$pt" | sql source -N >"$WORK/pt.s" &
    sed 's/DB\./sbtest_verify./' "$pt" | sql target -N >"$WORK/pt.t" &
    wait
    t=$(echo "$(now) - $t0" | bc); if [ -z "$best_p" ] || [ "$(echo "$t < $best_p" | bc)" = 1 ]; then best_p=$t; fi
  done
  cmp -s "$WORK/pt.s" "$WORK/pt.t" || { echo "pt-style checksums differ" >&2; exit 1; }
  echo
  echo "Verification of $TOTAL rows ($TABLES sysbench tables x $ROWS), both servers on this machine,"
  echo "each contender reading both sides at once; best of $rounds rounds"
  printf '%-54s %8s %10s %12s\n' "" seconds rows/s "vs CHECKSUM"
  printf '%-54s %8.2f %10d %12s\n' "CHECKSUM TABLE on both sides (names no rows)" "$best_c" "$(echo "$TOTAL / $best_c" | bc)" "1.00x"
  printf '%-54s %8.2f %10d %11sx\n' "pt-table-checksum-style CRC32 chunks (20k rows)" "$best_p" "$(echo "$TOTAL / $best_p" | bc)" "$(echo "scale=2; $best_p / $best_c" | bc)"
  printf '%-54s %8.2f %10d %11sx\n' "ferry verify --checksum (names differing rows)" "$best_f" "$(echo "$TOTAL / $best_f" | bc)" "$(echo "scale=2; $best_f / $best_c" | bc)"
  echo "(ferry's time is the whole command: start-up, catalog, chunk plan, both sides)"
  echo "ferry verify peak RSS: $(($(cat "$WORK/vrss") / 1024)) MiB"
}

# ------------------------------------------------------------ subscriptions
# A BURST-second sysbench oltp_write_only burst on the source; then, from
# the position before it, a subscribe job delivers every row change to the
# jsonl sink (a file, fsync per batch) and to NATS JetStream (a local
# nats-server -js, every publish acknowledged); beside them the binlog
# decode rate of the same range (ferry's stream with a null sink).
bench_subscribe() {
  command -v nats-server >/dev/null 2>&1 || {
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq nats-server >/dev/null
  }
  echo "== subscribe: preparing sbcdc (4 x $CDC_ROWS rows)"
  sql source -e "DROP DATABASE IF EXISTS sbcdc; CREATE DATABASE sbcdc"
  sbc --threads=2 prepare >/dev/null
  read -r P_FILE P_POS _ < <(sql source -N -e "SHOW MASTER STATUS")
  echo "== subscribe: ${BURST}s sysbench oltp_write_only burst (4 threads) from $P_FILE:$P_POS"
  TXNS=$(sbc --threads=4 --time="$BURST" run | awk '/transactions:/ {print $2}')
  read -r E_FILE E_POS _ < <(sql source -N -e "SHOW MASTER STATUS")
  ROWS_CHANGED=$((TXNS * 4))
  ferry_job bench-decode sync "$TARGET_PORT" sbcdc_ferry >"$WORK/decode.toml"
  read -r _ _ decode_s < <("$FERRY" decode-bench "$WORK/decode.toml" "$P_FILE:$P_POS" "$E_FILE:$E_POS")

  local nats_port=24222
  mkdir -p "$WORK/nats"
  nats-server -js -a 127.0.0.1 -p $nats_port -sd "$WORK/nats" >/dev/null 2>&1 &
  NATS_PID=$!
  trap 'kill $NATS_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
  until (exec 3<>/dev/tcp/127.0.0.1/$nats_port) 2>/dev/null; do sleep 0.05; done

  sub_run() { # sub_run NAME SINK-TOML: prints seconds to deliver the burst
    cat >"$WORK/sub.toml" <<EOF
name = "$1"
mode = "subscribe"
[source]
host = "127.0.0.1"
port = $SOURCE_PORT
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
server_id = 7002
[[select]]
database = "sbcdc"
[cdc]
start = "$P_FILE:$P_POS"
[sink]
$2
EOF
    rm -rf "$WORK/sub-state" "$WORK/events.jsonl"*
    "$FERRY" --state "$WORK/sub-state" run "$WORK/sub.toml" 2>"$WORK/sub.err" &
    local pid=$!
    # The clock starts when the stream is open (start-up and precheck apart).
    until grep -q "streaming changes" "$WORK/sub.err" 2>/dev/null; do
      kill -0 $pid 2>/dev/null || { cat "$WORK/sub.err" >&2; exit 1; }
      sleep 0.01
    done
    local t0; t0=$(now)
    while :; do
      pos=$("$FERRY" --state "$WORK/sub-state" status --json 2>/dev/null | awk -F'"' '/"position"/ {print $4; exit}')
      f=${pos%:*}; p=${pos##*:}
      if [ "$f" = "$E_FILE" ] && [ "${p:-0}" -ge "$E_POS" ] 2>/dev/null; then break; fi
      kill -0 $pid 2>/dev/null || { cat "$WORK/sub.err" >&2; exit 1; }
      sleep 0.2 # polling costs CPU the job would use; 0.2 s resolution
    done
    echo "$(now) - $t0" | bc
    kill -TERM $pid; wait $pid 2>/dev/null || true
  }
  jsonl_s=$(sub_run bench-jsonl "kind = \"jsonl\"
path = \"$WORK/events.jsonl\"
rotate_bytes = 1073741824")
  local lines; lines=$(cat "$WORK"/events.jsonl* | wc -l)
  [ "$lines" -ge "$ROWS_CHANGED" ] || { echo "jsonl: $lines events, expected $ROWS_CHANGED" >&2; exit 1; }
  nats_s=$(sub_run bench-nats "kind = \"nats\"
url = \"nats://127.0.0.1:$nats_port\"
stream = \"BENCH\"")
  kill $NATS_PID 2>/dev/null || true
  crate() { echo "$ROWS_CHANGED / $1" | bc; }
  echo
  echo "Change events of a ${BURST}s sysbench oltp_write_only burst ($TXNS transactions, $ROWS_CHANGED row changes)"
  echo "(sink times run from the stream's opening to the last event acknowledged, checked every 0.2 s)"
  printf '%-48s %8s %10s %12s\n' "" seconds events/s "of decode"
  printf '%-48s %8.2f %10d %12s\n' "binlog stream + decode, null sink" "$decode_s" "$(crate "$decode_s")" "1.00"
  printf '%-48s %8.2f %10d %12s\n' "subscribe -> jsonl file (fsync per batch)" "$jsonl_s" "$(crate "$jsonl_s")" "$(echo "scale=2; $decode_s / $jsonl_s" | bc)"
  printf '%-48s %8.2f %10d %12s\n' "subscribe -> NATS JetStream (acks awaited)" "$nats_s" "$(crate "$nats_s")" "$(echo "scale=2; $decode_s / $nats_s" | bc)"
}

# ------------------------------------------------------- into PostgreSQL
# The 1M-row sysbench set loaded into a sandbox PostgreSQL (initdb'd under
# $SANDBOX/pg, port PG_PORT) by ferry ([target] kind = "postgresql",
# THREADS threads) and by pgloader (Debian's package, its defaults: 4
# workers), each into a fresh database; both compared to the source.
PG_PORT=${PG_PORT:-23309}
pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
pgsql() { PGPASSWORD=$PW "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U ferry -d "$1" -XAtq -c "$2"; }
start_pg() {
  local dir=${SANDBOX:-$PWD/.sandbox}/pg bin; bin=$(pg_bin)
  local as=(); [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir"; echo "$PW" >"$dir/pw"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U ferry -E UTF8 --locale=C --auth-host=scram-sha-256 \
      --auth-local=trust --pwfile="$dir/pw" >/dev/null
  fi
  if ! PGPASSWORD=$PW "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_wal_size=4GB" start >/dev/null
  fi
}

bench_pg() {
prepare_sbtest
command -v pgloader >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; \
  $sudo apt-get install -y -qq pgloader postgresql >/dev/null; }
start_pg
for i in $(seq 1 "$TABLES"); do sql source -N -e "CHECKSUM TABLE sbtest.sbtest$i" >/dev/null; done
declare -A PGSECS
for db in bench_ferry bench_pgloader; do
  pgsql postgres "DROP DATABASE IF EXISTS $db"; pgsql postgres "CREATE DATABASE $db"
done
{ scripts/sandbox.sh job bench-pg full sbtest sbtest "$PG_PORT"; cat <<EOF
[full]
threads = $THREADS
EOF
} | sed 's/^password_env = "FERRY_DST_PASSWORD"$/password_env = "FERRY_DST_PASSWORD"\nkind = "postgresql"\ndatabase = "bench_ferry"/' \
  | grep -v '^server_id' >"$WORK/pg.toml"
rm -rf "$WORK/pgstate"
local t0; t0=$(now)
/usr/bin/time -f "%M" -o "$WORK/pgrss" "$FERRY" --state "$WORK/pgstate" run "$WORK/pg.toml" 2>"$WORK/pg.err" \
  || { cat "$WORK/pg.err"; exit 1; }
PGSECS[ferry]=$(echo "$(now) - $t0" | bc)
# pgloader's defaults (prefetch rows = 100000) sometimes exhaust its SBCL
# heap on this data: then it runs again with prefetch rows = 10000, and the
# table says so.
PGLOADER_WITH=defaults
run_pgloader() {
  pgsql postgres "DROP DATABASE IF EXISTS bench_pgloader"; pgsql postgres "CREATE DATABASE bench_pgloader"
  t0=$(now)
  pgloader --quiet "$@" "mysql://ferry:$PW@127.0.0.1:$SOURCE_PORT/sbtest" \
    "postgresql://ferry:$PW@127.0.0.1:$PG_PORT/bench_pgloader" >"$WORK/pgloader.log" 2>&1 </dev/null
}
if ! run_pgloader; then
  if grep -q "Heap exhausted" "$WORK/pgloader.log"; then
    PGLOADER_WITH="prefetch rows = 10000*"
    run_pgloader --with "prefetch rows = 10000" || { tail -20 "$WORK/pgloader.log"; exit 1; }
  else
    tail -20 "$WORK/pgloader.log"; exit 1
  fi
fi
PGSECS[pgloader]=$(echo "$(now) - $t0" | bc)
for i in $(seq 1 "$TABLES"); do
  want=$(sql source -N -e "SELECT CONCAT(COUNT(*), '|', SUM(k), '|', SUM(LENGTH(c))) FROM sbtest.sbtest$i")
  for db in bench_ferry bench_pgloader; do
    got=$(pgsql "$db" "SELECT COUNT(*) || '|' || SUM(k) || '|' || SUM(LENGTH(c)) FROM sbtest.sbtest$i")
    [ "$got" = "$want" ] || { echo "MISMATCH: $db sbtest$i: $got != $want" >&2; exit 1; }
  done
done
echo
echo "Full load into PostgreSQL $("$(pg_bin)/postgres" --version | awk '{print $3}') of $TOTAL rows ($TABLES sysbench tables x $ROWS),"
echo "$(nproc) cores, MariaDB source and PostgreSQL target on this machine"
printf '%-44s %8s %10s %12s\n' "" seconds rows/s "ferry faster"
printf '%-44s %8.2f %10d %12s\n' "ferry ($THREADS threads, COPY)" "${PGSECS[ferry]}" \
  "$(echo "$TOTAL / ${PGSECS[ferry]}" | bc)" ""
printf '%-44s %8.2f %10d %12s\n' "pgloader ($PGLOADER_WITH)" "${PGSECS[pgloader]}" \
  "$(echo "$TOTAL / ${PGSECS[pgloader]}" | bc)" "$(echo "scale=2; ${PGSECS[pgloader]} / ${PGSECS[ferry]}" | bc)x"
[ "$PGLOADER_WITH" = defaults ] || echo "* pgloader's defaults ran out of SBCL heap; it ran again with prefetch rows = 10000"
echo "ferry peak RSS: $(( $(cat "$WORK/pgrss") / 1024 )) MiB"

# CDC apply: a BURST-second sysbench burst on the source after the load;
# then a sync job from the position before it ([cdc] start, threads = 4)
# applies the backlog to the rows ferry loaded. The ratio is the apply rate
# over the rate the source wrote it (above 1: it keeps up).
read -r P_FILE P_POS < <(sql source -N -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SOURCE_PORT" \
  --mysql-user=ferry --mysql-password="$PW" --mysql-db=sbtest --tables="$TABLES" \
  --table-size="$ROWS" --threads=4 --time="$BURST" run >"$WORK/pgburst.log"
txns=$(awk '/transactions:/ {print $2}' "$WORK/pgburst.log")
read -r E_FILE E_POS < <(sql source -N -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
{ scripts/sandbox.sh job bench-pgcdc sync sbtest sbtest "$PG_PORT"; cat <<EOF
[cdc]
start = "$P_FILE:$P_POS"
threads = 4
EOF
} | sed 's/^password_env = "FERRY_DST_PASSWORD"$/password_env = "FERRY_DST_PASSWORD"\nkind = "postgresql"\ndatabase = "bench_ferry"/' \
  | grep -v '^server_id' >"$WORK/pgcdc.toml"
rm -rf "$WORK/pgcdc-state"
pgsql bench_ferry "DELETE FROM ferry.checkpoints WHERE job LIKE 'bench-pgcdc%'" 2>/dev/null || true
t0=$(now)
"$FERRY" --state "$WORK/pgcdc-state" run "$WORK/pgcdc.toml" 2>"$WORK/pgcdc.err" &
local pid=$!
# Done when a lane's marker is at the burst's end (the tables are compared
# after).
while :; do
  at=$(pgsql bench_ferry "SELECT binlog_file || ' ' || binlog_pos FROM ferry.checkpoints WHERE job LIKE 'bench-pgcdc%' ORDER BY binlog_file DESC, binlog_pos DESC LIMIT 1" 2>/dev/null || echo "x 0")
  read -r f p <<<"$at"
  if [ "$f" = "$E_FILE" ] && [ "${p:-0}" -ge "$E_POS" ]; then break; fi
  kill -0 $pid 2>/dev/null || { cat "$WORK/pgcdc.err" >&2; exit 1; }
  sleep 0.05
done
cdc_s=$(echo "$(now) - $t0" | bc)
kill -TERM $pid; wait $pid || true
for i in $(seq 1 "$TABLES"); do
  want=$(sql source -N -e "SELECT CONCAT(COUNT(*), '|', SUM(k), '|', SUM(LENGTH(c)), '|', SUM(id)) FROM sbtest.sbtest$i")
  got=$(pgsql bench_ferry "SELECT COUNT(*) || '|' || SUM(k) || '|' || SUM(LENGTH(c)) || '|' || SUM(id) FROM sbtest.sbtest$i")
  [ "$got" = "$want" ] || { echo "MISMATCH after CDC: sbtest$i: $got != $want" >&2; exit 1; }
done
echo
echo "CDC apply into PostgreSQL: a ${BURST}s sysbench oltp_write_only burst (4 threads, $txns transactions,"
echo "4 row changes each), applied from its start position to the loaded copy ([cdc] threads = 4),"
echo "start-up included (connect, catalog reads); tables compared after"
printf '%-44s %8s %10s %12s\n' "" seconds txn/s "vs source"
printf '%-44s %8.2f %10d %12s\n' "source writing the burst" "$BURST" "$(echo "$txns / $BURST" | bc)" ""
printf '%-44s %8.2f %10d %12s\n' "ferry applying it into PostgreSQL" "$cdc_s" \
  "$(echo "$txns / $cdc_s" | bc)" "$(echo "scale=2; $BURST / $cdc_s" | bc)x"
}

case $WHAT in
  full) bench_full ;;
  cdc) bench_cdc ;;
  verify) bench_verify ;;
  subscribe) bench_subscribe ;;
  pg) bench_pg ;;
  all) bench_full; echo; bench_cdc; echo; bench_verify; echo; bench_subscribe ;;
  *) echo "usage: scripts/bench.sh [full|cdc|verify|subscribe|pg|all]" >&2; exit 2 ;;
esac

