#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer), for a bounded time per target.
# Needs a nightly toolchain and `cargo install cargo-fuzz`; not part of .ci/run.
#
#   scripts/cargo-fuzz.sh [seconds per target] [target ...]
#
# Targets (fuzz/fuzz_targets/): key, json, prefer, validator, cursor. Each starts from
# its corpus in fuzz/corpus/<target>/ (what earlier runs found) and the hand-written
# seeds of the hardening review in fuzz/seeds/<target>/; new inputs that reach new code
# are added to the corpus, which is then minimised to one input per covered edge. A crash is saved under
# fuzz/artifacts/<target>/ and the script fails. Commit the corpus and any artifact.
#
# The targets are built without AddressSanitizer (--sanitizer none): the code under test
# is safe Rust (unsafe is forbidden in the workspace), so the sanitizer would add build
# time and little else; panics and failed assertions are what the targets look for.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(key json prefer validator cursor)
fi
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    cargo +nightly fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
    cargo +nightly fuzz cmin --sanitizer none "$t" "fuzz/corpus/$t" -- -use_counters=0 \
        >/dev/null 2>&1
    echo "== $t: corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
done
if [ -n "$(find fuzz/artifacts -type f 2>/dev/null)" ]; then
    echo "crashes found:"
    find fuzz/artifacts -type f
    exit 1
fi
