#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for RUNS executions (default 1,000,000),
# from its committed seeds (fuzz/seeds/<target>) and its growing corpus (fuzz/corpus/<target>),
# and prints one Markdown table row per target: executions, seconds, outcome. A panic leaves
# its input in fuzz/artifacts/<target>/ and the run's log in fuzz/artifacts/<target>.log.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); see docs/FUZZING.md.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-1000000}
flags=(-s none -a) # no sanitizer (safe Rust; panics are what is looked for), overflow checks on
cargo +nightly fuzz build "${flags[@]}" || exit 1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
failed=0
echo "| target | executions | seconds | outcome |"
echo "|---|---|---|---|"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" fuzz/artifacts
  log="fuzz/artifacts/$t.log"
  start=$(date +%s)
  if cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -runs="$runs" -rss_limit_mb=4096 >"$log" 2>&1; then
    outcome="no panic"
  else
    outcome="FAILED (see $log)"
    failed=1
  fi
  secs=$(($(date +%s) - start))
  executions=$(grep -oE '^Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  echo "| \`$t\` | $executions | $secs | $outcome |"
done
exit $failed
