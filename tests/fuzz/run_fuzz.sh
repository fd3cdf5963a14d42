#!/bin/sh
# Fuzzes the msgpack decoder for SECONDS (default 60).
# Usage: tests/fuzz/run_fuzz.sh [SECONDS] [BUILD_DIR]    (BUILD_DIR: ./build)
# Builds the fuzz_event_decode target if needed, runs it on a scratch copy
# of tests/fuzz/corpus (so the committed seeds stay small), and exits
# nonzero on a crash, leak, OOM or timeout; the input is left in the
# scratch directory and its path printed, to be added to the corpus.
set -eu

seconds=${1:-60}
build=${2:-./build}
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$source_dir" -B "$build" >/dev/null
fi
cmake --build "$build" --target fuzz_event_decode
fuzzer="$build/tests/fuzz/fuzz_event_decode"
[ -x "$fuzzer" ] || { echo "run_fuzz: $fuzzer not built (is clang installed?)" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/funnel-fuzz.XXXXXX")
mkdir -p "$scratch/corpus" "$scratch/artifacts"
cp "$here"/corpus/* "$scratch/corpus/"

status=0
"$fuzzer" -max_total_time="$seconds" -malloc_limit_mb=256 -rss_limit_mb=1024 \
    -max_len=70000 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$scratch/artifacts/" "$scratch/corpus" || status=$?

if [ "$status" -ne 0 ]; then
    echo "run_fuzz: FAILED (exit $status); inputs in $scratch/artifacts:" >&2
    ls -l "$scratch/artifacts" >&2
    exit 1
fi
echo "run_fuzz: OK after ${seconds}s, $(ls "$scratch/corpus" | wc -l) corpus entries"
rm -rf "$scratch"
