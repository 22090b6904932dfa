#!/usr/bin/env bash
# The one test command (README, CI): makes sure a PostgreSQL server is running — starting the
# local cluster, or installing PostgreSQL with apt-get when it is missing — creates the
# database the tests start from, exports DATABASE_URL, installs Chromium and chromedriver with
# apt-get when chromedriver is missing (exporting CHROMEDRIVER), and runs the whole test suite.
#
# Set DATABASE_URL yourself to test against another server; it must be allowed to create
# databases (each test creates its own, named tally_test_<random>).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

start_local_cluster() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting the local PostgreSQL $version cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
}

install_postgres() {
  say "PostgreSQL is not installed: installing it with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-client >/dev/null
}

wait_ready() {
  for _ in $(seq 1 30); do
    pg_ready && return 0
    sleep 1
  done
  echo "error: PostgreSQL does not answer on 127.0.0.1:5432; start it and run scripts/test.sh again" >&2
  exit 1
}

if [ -z "${DATABASE_URL:-}" ]; then
  if ! pg_ready; then
    if ! command -v pg_isready >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
      install_postgres
    fi
    start_local_cluster
    wait_ready
  fi
  admin="postgres://postgres@127.0.0.1:5432/postgres"
  if ! psql "$admin" -qtAc 'select 1' >/dev/null 2>&1; then
    # A fresh Debian cluster asks for a password on TCP: give the postgres role one for the tests.
    say "setting a password for the postgres role (local test cluster)"
    as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    admin="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  fi
  # Leftovers of interrupted runs.
  for db in $(psql "$admin" -qtAc "select datname from pg_database where datname like 'tally\_test\_%'"); do
    psql "$admin" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
  done
  psql "$admin" -qtAc "select 1 from pg_database where datname = 'tally_test'" | grep -q 1 \
    || psql "$admin" -qc 'CREATE DATABASE tally_test' >/dev/null
  export DATABASE_URL="${admin%/postgres}/tally_test"
fi

# The browser test (tests/it/browser.rs) drives Debian's headless Chromium through chromedriver;
# it fails, rather than skips, when chromedriver is missing.
if [ -z "${CHROMEDRIVER:-}" ]; then
  if ! command -v chromedriver >/dev/null 2>&1; then
    say "chromedriver is not installed: installing chromium and chromium-driver with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  CHROMEDRIVER=$(command -v chromedriver) || {
    echo "error: chromedriver is not on PATH after installing chromium-driver; set CHROMEDRIVER to its path" >&2
    exit 1
  }
  export CHROMEDRIVER
fi

say "running the test suite against PostgreSQL ($(echo "$DATABASE_URL" | sed -E "s#//[^@]*@#//#")) and SQLite"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (each test binary prints its own).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
