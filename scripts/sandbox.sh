#!/usr/bin/env bash
# Throwaway MariaDB servers for the demo and the benchmarks: a source and a
# target, each with its own datadir, socket and port, binlog ROW / FULL / FULL.
#
#   scripts/sandbox.sh start [replica]  start both (creating them on first
#                                 use); with `replica`, also a third server
#                                 for native-replication benchmarks
#   scripts/sandbox.sh stop       stop both
#   scripts/sandbox.sh restart NAME   stop and start one (source, target, replica)
#   scripts/sandbox.sh destroy    stop both and delete their data
#   scripts/sandbox.sh env        print the exports a job file needs
#   scripts/sandbox.sh sql source|target [args...]   a root client
#   scripts/sandbox.sh job NAME MODE DB RENAME [TARGET_PORT] [SERVER_ID]
#                                 a job file from the source's DB to RENAME
#                                 on the target (or another server's port)
#
# SANDBOX (default ./.sandbox), SOURCE_PORT (23306), TARGET_PORT (23307).
# Both servers get a user ferry / $FERRY_PASSWORD (default "ferry-sandbox").
set -euo pipefail

SANDBOX=${SANDBOX:-$PWD/.sandbox}
SOURCE_PORT=${SOURCE_PORT:-23306}
TARGET_PORT=${TARGET_PORT:-23307}
REPLICA_PORT=${REPLICA_PORT:-23308}
FERRY_PASSWORD=${FERRY_PASSWORD:-ferry-sandbox}

need_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "mariadbd not found: run scripts/test.sh once, or apt-get install -y mariadb-server" >&2
    exit 1
  fi
}

mariadbd_bin() { command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd; }

port_of() { case $1 in source) echo "$SOURCE_PORT" ;; target) echo "$TARGET_PORT" ;; *) echo "$REPLICA_PORT" ;; esac; }
id_of() { case $1 in source) echo 1 ;; target) echo 2 ;; *) echo 3 ;; esac; }

client() { # client NAME [args...]
  local name=$1; shift
  mariadb --no-defaults --default-character-set=utf8mb4 --socket="$SANDBOX/$name/s.sock" -uroot "$@"
}

start_one() {
  local name=$1 dir="$SANDBOX/$1" port; port=$(port_of "$1")
  if [ -S "$dir/s.sock" ] && client "$name" -e 'SELECT 1' >/dev/null 2>&1; then
    echo "$name: already running on 127.0.0.1:$port"
    return
  fi
  mkdir -p "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$dir/data" --tmpdir="$dir" --auth-root-authentication-method=normal \
      --user="$(id -un)" >"$dir/install.log" 2>&1
    local fresh=1
  fi
  "$(mariadbd_bin)" --no-defaults --datadir="$dir/data" --socket="$dir/s.sock" --port="$port" \
    --bind-address=127.0.0.1 --pid-file="$dir/pid" --log-error="$dir/err.log" --tmpdir="$dir" \
    --log-bin="$dir/data/binlog" --binlog-format=ROW --server-id="$(id_of "$name")" \
    --binlog-row-image=FULL --binlog-row-metadata=FULL --log-slave-updates --user="$(id -un)" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --max-allowed-packet=64M --innodb-buffer-pool-size=256M --innodb-log-file-size=256M \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 >/dev/null 2>&1 &
  local deadline=$((SECONDS + 30))
  until client "$name" -e 'SELECT 1' >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$name: did not start; see $dir/err.log" >&2
      tail -n 20 "$dir/err.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  if [ "${fresh:-0}" = 1 ]; then
    client "$name" <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'ferry'@'%' IDENTIFIED BY '$FERRY_PASSWORD';
CREATE USER IF NOT EXISTS 'ferry'@'localhost' IDENTIFIED BY '$FERRY_PASSWORD';
GRANT ALL ON *.* TO 'ferry'@'%' WITH GRANT OPTION;
GRANT ALL ON *.* TO 'ferry'@'localhost' WITH GRANT OPTION;
SQL
  fi
  echo "$name: running on 127.0.0.1:$port (datadir $dir/data)"
}

stop_one() {
  local dir="$SANDBOX/$1"
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
      [ $SECONDS -ge $deadline ] && { kill -9 "$pid" 2>/dev/null || true; break; }
      sleep 0.1
    done
    echo "$1: stopped"
  fi
  rm -f "$dir/pid"
}

case "${1:-}" in
  start) need_mariadb; start_one source; start_one target; [ "${2:-}" = replica ] && start_one replica; true ;;
  stop) stop_one source; stop_one target; stop_one replica ;;
  destroy) stop_one source; stop_one target; stop_one replica; rm -rf "$SANDBOX"; echo "removed $SANDBOX" ;;
  env)
    echo "export FERRY_SRC_PASSWORD='$FERRY_PASSWORD' FERRY_DST_PASSWORD='$FERRY_PASSWORD'"
    echo "export SOURCE_PORT=$SOURCE_PORT TARGET_PORT=$TARGET_PORT REPLICA_PORT=$REPLICA_PORT"
    ;;
  restart) need_mariadb; stop_one "$2"; start_one "$2" ;;
  sql) shift; name=$1; shift; client "$name" "$@" ;;
  job) # job NAME MODE DB RENAME [TARGET_PORT] [SERVER_ID]
    cat <<EOF
name = "$2"
mode = "$3"
[source]
host = "127.0.0.1"
port = $SOURCE_PORT
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
server_id = ${7:-7001}
[target]
host = "127.0.0.1"
port = ${6:-$TARGET_PORT}
user = "ferry"
password_env = "FERRY_DST_PASSWORD"
[[select]]
database = "$4"
rename = "$5"
EOF
    ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
