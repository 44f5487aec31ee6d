#!/usr/bin/env bash
# The soak test: a sync job under a mixed workload on a live source, with
# interruptions at random moments, ending with a row-for-row comparison of
# every table that must be exact.
#
#   scripts/soak.sh                 20 interruptions, a random seed
#   SOAK_SEED=42 scripts/soak.sh    the same run again
#   SOAK_INTERRUPTIONS=5 scripts/soak.sh
#
# Workload: sysbench oltp_write_only (when installed), primary-key moves,
# unique-key swaps, cascading deletes, keyless duplicates, DDL, and
# pt-online-schema-change runs (when installed). Interruptions: kill -9 of
# the runner, pause/resume, SIGTERM, a source restart. The seed is printed
# first; the servers are throwaway ones in $SOAK_DIR (default ./.soak),
# stopped at the end. Exit 0 when the target equals the source.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

SEED=${SOAK_SEED:-$(( $(date +%s) % 100000 ))}
N=${SOAK_INTERRUPTIONS:-20}
DIR=${SOAK_DIR:-$PWD/.soak}
export SANDBOX=$DIR/servers SOURCE_PORT=${SOAK_SOURCE_PORT:-24306} TARGET_PORT=${SOAK_TARGET_PORT:-24307}
RANDOM=$SEED
echo "soak: seed $SEED, $N interruptions (SOAK_SEED=$SEED reproduces the choices)"

cargo build --quiet --bin ferry
FERRY=${FERRY_BIN:-$PWD/target/debug/ferry}
rm -rf "$DIR"
mkdir -p "$DIR"
STATE=$DIR/state
LOG=$DIR/ferry.stderr
scripts/sandbox.sh start >/dev/null
eval "$(scripts/sandbox.sh env)"
src() { scripts/sandbox.sh sql source "$@"; }
dst() { scripts/sandbox.sh sql target "$@"; }
# Statements that may meet a restarting source: retried a few times, as an
# application would.
try_src() {
  local i
  for i in 1 2 3 4 5; do
    src -e "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  return 0
}

src <<'SQL'
DROP DATABASE IF EXISTS soak;
CREATE DATABASE soak;
USE soak;
CREATE TABLE moves (id INT PRIMARY KEY, v VARCHAR(40));
INSERT INTO moves SELECT seq, CONCAT('m', seq) FROM seq_1_to_20000;
CREATE TABLE uniq (id INT PRIMARY KEY, code INT NOT NULL, UNIQUE KEY (code));
INSERT INTO uniq SELECT seq, seq FROM seq_1_to_5000;
CREATE TABLE parent (id INT PRIMARY KEY, note VARCHAR(20));
INSERT INTO parent SELECT seq, 'p' FROM seq_1_to_5000;
CREATE TABLE child (id INT PRIMARY KEY AUTO_INCREMENT, parent_id INT NOT NULL,
  FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);
INSERT INTO child (parent_id) SELECT 1 + seq % 5000 FROM seq_1_to_10000;
CREATE TABLE heap (a INT, b VARCHAR(10));
INSERT INTO heap SELECT seq % 100, 'h' FROM seq_1_to_3000;
CREATE TABLE side (id INT PRIMARY KEY, v INT);
INSERT INTO side SELECT seq, seq FROM seq_1_to_1000;
SQL
dst -e "DROP DATABASE IF EXISTS soak_copy"
SYSBENCH=""
if command -v sysbench >/dev/null 2>&1; then
  SYSBENCH="sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$SOURCE_PORT \
    --mysql-user=root --mysql-db=soak --tables=2 --table-size=10000"
  $SYSBENCH prepare >/dev/null
fi

{ scripts/sandbox.sh job soak sync soak soak_copy; cat <<EOF
[full]
threads = 2
chunk_rows = 2000
rows_per_sec = 20000
[cdc]
retry_for = "1h"
EOF
} > "$DIR/soak.toml"

PID=""
start_ferry() {
  "$FERRY" --state "$STATE" run "$DIR/soak.toml" >>"$LOG" 2>&1 &
  PID=$!
}
ferry_alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; }
wait_socket() {
  local deadline=$((SECONDS + 30))
  until "$FERRY" --state "$STATE" status soak 2>/dev/null | grep -q "runner: up"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

STOP=$DIR/stop
rm -f "$STOP"
workers=()
cleanup() {
  touch "$STOP"
  for w in "${workers[@]}"; do kill "$w" 2>/dev/null || true; done
  ferry_alive && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  scripts/sandbox.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The application: one loop of its own statements, sysbench beside it.
app() {
  local i=0 a b p ncol=0
  RANDOM=$((SEED + 1))
  while [ ! -e "$STOP" ]; do
    i=$((i + 1))
    case $((RANDOM % 6)) in
      0) try_src "UPDATE soak.moves SET id = id + 1000000 ORDER BY id LIMIT 1" ;;
      1) a=$((1 + RANDOM % 2500)); b=$((2501 + RANDOM % 2500))
         try_src "USE soak; START TRANSACTION; SELECT code INTO @ca FROM uniq WHERE id = $a;
                  SELECT code INTO @cb FROM uniq WHERE id = $b; UPDATE uniq SET code = -@ca WHERE id = $a;
                  UPDATE uniq SET code = @ca WHERE id = $b; UPDATE uniq SET code = @cb WHERE id = $a; COMMIT;" ;;
      2) p=$((1 + RANDOM % 5000))
         try_src "USE soak; DELETE FROM parent WHERE id = $p; INSERT IGNORE INTO parent VALUES ($p, 'again');
                  INSERT INTO child (parent_id) VALUES ($p), ($p);" ;;
      3) a=$((RANDOM % 100))
         try_src "USE soak; INSERT INTO heap VALUES ($a, 'dup'), ($a, 'dup'); DELETE FROM heap WHERE a = $((RANDOM % 100)) LIMIT 1;" ;;
      4) try_src "UPDATE soak.side SET v = v + 1 WHERE id = $((1 + RANDOM % 1000))" ;;
      5) if [ $((i % 10)) = 0 ]; then
           if [ $ncol -lt 3 ]; then
             ncol=$((ncol + 1)); try_src "ALTER TABLE soak.side ADD COLUMN c$ncol INT DEFAULT $ncol"
           else
             try_src "ALTER TABLE soak.side DROP COLUMN c$ncol"; ncol=$((ncol - 1))
           fi
         fi ;;
    esac
    sleep 0.02
  done
}
app &
workers+=($!)
if [ -n "$SYSBENCH" ]; then
  ( while [ ! -e "$STOP" ]; do
      $SYSBENCH --threads=2 --rate=50 --time=10 --report-interval=0 run >/dev/null 2>&1 || sleep 1
    done ) &
  workers+=($!)
fi
if command -v pt-online-schema-change >/dev/null 2>&1; then
  ( while [ ! -e "$STOP" ]; do
      for _ in $(seq 20); do [ -e "$STOP" ] && exit 0; sleep 1; done
      pt-online-schema-change --alter "FORCE" "D=soak,t=moves,h=127.0.0.1,P=$SOURCE_PORT,u=root" \
        --execute --recursion-method=none --chunk-size=2000 >>"$DIR/ptosc.log" 2>&1 || true
    done ) &
  workers+=($!)
fi

start_ferry
declare -A did=()
for n in $(seq 1 "$N"); do
  sleep $((3 + RANDOM % 8))
  if ! ferry_alive; then
    echo "soak: the runner exited on its own:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  case $((RANDOM % 4)) in
    0) what="kill -9"; kill -9 "$PID"; wait "$PID" 2>/dev/null || true; start_ferry ;;
    1) what="pause/resume"
       if wait_socket; then
         "$FERRY" --state "$STATE" pause soak >/dev/null || true
         sleep $((1 + RANDOM % 4))
         "$FERRY" --state "$STATE" resume soak >/dev/null || true
       fi ;;
    2) what="SIGTERM"; kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; start_ferry ;;
    3) what="source restart"; scripts/sandbox.sh restart source >/dev/null ;;
  esac
  did[$what]=$(( ${did[$what]:-0} + 1 ))
  state=$( ("$FERRY" --state "$STATE" status soak 2>/dev/null || true) | sed -n 's/^ soak (sync): \([A-Z_]*\).*/\1/p' | head -1)
  echo "soak: $n/$N $what (job ${state:-?})"
done

# Quiet the source, then the target must become equal, row for row.
touch "$STOP"
for w in "${workers[@]}"; do wait "$w" 2>/dev/null || true; done
tables=$(src -N -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'soak' AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME NOT LIKE '\\_%' ORDER BY 1")
dump() { # dump SIDE DB TABLE: every row, sorted
  local cols
  cols=$(src -N -e "SELECT GROUP_CONCAT(CONCAT('\`', COLUMN_NAME, '\`') ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'soak' AND TABLE_NAME = '$3'")
  scripts/sandbox.sh sql "$1" -N -e "SELECT $cols FROM \`$2\`.\`$3\` ORDER BY $cols" 2>&1
}
same() {
  local t
  for t in $tables; do
    [ "$(dump source soak "$t" | md5sum)" = "$(dump target soak_copy "$t" | md5sum)" ] || return 1
  done
}
deadline=$((SECONDS + 300))
until same; do
  if [ $SECONDS -ge $deadline ] || ! ferry_alive; then
    echo "soak: FAIL (seed $SEED): the target differs from the source" >&2
    for t in $tables; do
      if ! diff <(dump source soak "$t") <(dump target soak_copy "$t") >"$DIR/diff.$t"; then
        echo "  $t: $(grep -c '^[<>]' "$DIR/diff.$t") differing rows (see $DIR/diff.$t)" >&2
      fi
    done
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  sleep 2
done
rows=$(for t in $tables; do src -N -e "SELECT COUNT(*) FROM soak.\`$t\`"; done | awk "{s += \$1} END {print s}")
summary=$(for k in "${!did[@]}"; do echo "$k: ${did[$k]}"; done | sort | paste -sd, | sed 's/,/, /g')
ptosc=$(grep -c "Successfully altered" "$DIR/ptosc.log" 2>/dev/null || echo 0)
echo "soak: PASS (seed $SEED): $N interruptions ($summary), $ptosc pt-online-schema-change runs; $(echo "$tables" | wc -w) tables, $rows rows equal row for row"
