#!/usr/bin/env bash
# Builds every fuzz target (nightly, AddressSanitizer + libFuzzer coverage, the flags
# `cargo fuzz build --dev` uses, at opt-level 1) and runs each for SECONDS (default 20) on its
# seeded corpus. Exits non-zero on the first crash, leak or timeout; the input that caused it
# is in fuzz/artifacts/<target>/. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
all=(sip_stream sip_datagram sdp_offer_answer sdes_crypto flow_token provisioning_path inventory cert_mac inspect_cert srtp_unprotect media_packet)
[ $# -gt 0 ] && targets=("$@") || targets=("${all[@]}")

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks"
export CARGO_PROFILE_DEV_OPT_LEVEL=1
export CARGO_PROFILE_DEV_DEBUG=0
triple=x86_64-unknown-linux-gnu
cargo +nightly build --quiet --target $triple --bins
./seed.sh >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t"
  echo "fuzz: $t for ${secs}s"
  # -timeout: one input taking longer than 10 s is a hang (reported like a crash).
  "target/$triple/debug/$t" "corpus/$t" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|INFO: Running with)|panicked|ERROR' || true
  # libFuzzer leaves a crash-/leak-/timeout- file for every failure.
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz: $t FAILED, inputs in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash, leak or timeout"
