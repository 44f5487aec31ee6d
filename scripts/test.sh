#!/usr/bin/env bash
# Installs what the tests need when it is missing, then runs the whole suite:
# formatting, clippy, unit tests and the integration tests, which start their
# own throwaway MariaDB servers (and a PostgreSQL) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

missing=()
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || missing+=(sysbench)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v pt-online-schema-change >/dev/null 2>&1 || missing+=(percona-toolkit)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# PostgreSQL for the PostgreSQL target tests (they initdb their own).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# PostGIS for the spatial test, built for the PostgreSQL major installed
# (or about to be: Debian 12's is 15).
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 ||
  missing+=("postgresql-${pg_major:-15}-postgis-3")
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A Kafka-protocol broker for the Kafka sink test: tansu, from crates.io
# (memory storage needs its dynostore feature; a debug build is enough for
# a test broker and builds in about half the time).
if [ -z "${FERRY_TANSU:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then
    FERRY_TANSU=$(command -v tansu)
  elif [ -x "$HOME/.cargo/bin/tansu" ]; then
    FERRY_TANSU=$HOME/.cargo/bin/tansu
  else
    echo "== installing tansu (a Kafka-protocol broker, for the Kafka sink test; several minutes, once)"
    CARGO_TARGET_DIR=${TMPDIR:-/tmp}/ferry-tansu-build cargo install tansu --version 0.6.0 \
      --features dynostore --debug --locked --quiet --root "$HOME/.cargo"
    rm -rf "${TMPDIR:-/tmp}/ferry-tansu-build"
    FERRY_TANSU=$HOME/.cargo/bin/tansu
  fi
fi
export FERRY_TANSU

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== module graph (no circles)"
scripts/layout.py
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets

# The soak test is not part of the default suite (scripts/soak.sh runs 20
# interruptions); CI runs it with a few so it stays in working order.
if [ -n "${CI:-}" ] || [ -n "${FERRY_SOAK:-}" ]; then
  echo "== soak (${SOAK_INTERRUPTIONS:=5} interruptions)"
  SOAK_INTERRUPTIONS=$SOAK_INTERRUPTIONS scripts/soak.sh
fi
