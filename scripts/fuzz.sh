#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets of fuzz/ (cargo-fuzz + libFuzzer), each for SECONDS.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target in fuzz/Cargo.toml)
#
# Needs the nightly toolchain (libFuzzer instrumentation); installs cargo-fuzz into
# .cache/cargo-fuzz when no cargo-fuzz is on PATH. The committed seeds in fuzz/corpus/<target>
# are only read; what the fuzzer finds goes to .cache/fuzz/corpus/<target> (kept between runs,
# so later runs start from it). A crash, a panic or an input slower than 10 s fails the run and
# leaves the input in .cache/fuzz/artifacts/<target>/: fix the bug, then add the input to
# fuzz/corpus/<target>/ so every later run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^vmcp-fuzz$')
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "[fuzz] no nightly toolchain; trying: rustup toolchain install nightly --profile minimal"
  rustup toolchain install nightly --profile minimal
fi

cache=${FUZZ_CACHE:-$PWD/.cache/fuzz}
tools="$PWD/.cache/cargo-fuzz"
if ! command -v cargo-fuzz >/dev/null && [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "[fuzz] installing cargo-fuzz into $tools"
  cargo install --quiet --locked --root "$tools" cargo-fuzz --version 0.13.2
fi
export PATH="$tools/bin:$PATH"

cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "$cache/corpus/$t" "$cache/artifacts/$t"
  echo "[fuzz] $t for ${seconds}s"
  log="$cache/$t.log"
  if ! cargo +nightly fuzz run "$t" "$cache/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$cache/artifacts/$t/" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "[fuzz] $t FAILED (log: $log; inputs in $cache/artifacts/$t/)"
    exit 1
  fi
  grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units' "$log" || true
done
echo "[fuzz] ${#targets[@]} targets ran ${seconds}s each without a finding"
