#!/usr/bin/env bash
# Bounded fuzzing of the parsers that see raw client input (not part of .ci/run).
#
#   scripts/fuzz.sh [seconds per target binary] [cases per property]
#
# Runs the property-based fuzz tests of crates/idem/tests/fuzz.rs (key parser, strict
# JSON parser and fingerprint canonicaliser, Prefer parser) and
# crates/accubooks/tests/fuzz.rs (field validator, date parser, list query and cursor
# decoder) with many more cases than `cargo test` does, each binary stopped after the
# given time. A failing input is shrunk, printed, and saved by proptest under
# crates/*/proptest-regressions/; commit that file so every later run replays it first.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
cases="${2:-100000}"
cargo test --locked -p idem --test fuzz --no-run
cargo test --locked -p accubooks --test fuzz --no-run
status=0
for pkg in idem accubooks; do
    echo "== $pkg: up to ${cases} cases per property, at most ${seconds}s"
    set +e
    PROPTEST_CASES="$cases" timeout --signal=INT "$seconds" \
        cargo test --locked -q -p "$pkg" --test fuzz -- --test-threads 1
    rc=$?
    set -e
    case "$rc" in
        0) echo "== $pkg: all properties held" ;;
        124|130) echo "== $pkg: time limit reached with no failure" ;;
        *) echo "== $pkg: FAILED (exit $rc)"; status=1 ;;
    esac
done
exit "$status"
