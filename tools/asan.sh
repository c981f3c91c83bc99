#!/usr/bin/env bash
# AddressSanitizer over everything that reads bytes: the compiled core is built with
# -fsanitize=address in a scratch copy of the tracked files (this checkout is left as it is),
# then, under the sanitizer,
#   1. python -m dedup fuzz --replay: the committed corpus (tests/fuzz_corpus, its found/ included)
#      and any saved findings (./fuzz-crashes), every file through every target once;
#   2. a timed python -m dedup fuzz run (SECONDS, default 60; seed SEED, default 1);
#   3. the fuzz test files (hypothesis, guard pages, both twins), the fuzz command's tests,
#      the snapshot decodes' error paths (tests/formats/test_snapshot_load_errors.py), each
#      kernel's fallback (tests/kernels/test_cpu_features.py: subprocesses, also under ASan)
#      and removal's holes and compaction (tests/table/test_expiry_storage.py, test_table_order.py)
#
#   tools/asan.sh [SECONDS [SEED]]        PYTHON=python3.11 tools/asan.sh 300 7
#
# CPython itself is not built with ASan, so the runtime is preloaded (LD_PRELOAD) ahead of it,
# leak detection is off (the interpreter's allocations still held at exit are not ours), and
# PYTHONMALLOC=malloc sends every Python allocation through malloc, so that bytes objects get
# redzones too (in pymalloc's arenas a small overread would land in a neighbour, unseen).
# abort_on_error=1 makes a report end the process with SIGABRT: the fuzzer then saves the input
# it was running (to ./fuzz-crashes) and the report is on stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
seed=${2:-1}
python=${PYTHON:-python3}
crashes=$root/fuzz-crashes

scratch=$(mktemp -d "${TMPDIR:-/tmp}/dedup-asan.XXXXXX")
# ASan writes its reports to files (log_path below), shown if the run fails: on stderr a report
# from inside pytest went into pytest's capture and was lost when the process aborted. (A run
# that passes has reports too: the fuzz command's tests crash child processes on purpose.)
trap 'status=$?; if [ "$status" -ne 0 ]; then cat "$scratch"/asan-report.* >&2 2>/dev/null; fi; rm -rf "$scratch"' EXIT
(cd "$root" && git ls-files -z | tar --null -T - -c) | tar -x -C "$scratch"
cd "$scratch"

echo "+ build with AddressSanitizer in $scratch"
# (setup.py's own -O3 comes after CFLAGS' -O1 on the command line; ASan works at either level)
CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" LDFLAGS="-fsanitize=address" \
    "$python" setup.py build_ext --inplace > build.log 2>&1 || { cat build.log; exit 1; }
for module in dedup/_state*.so dedup/_records*.so dedup/_snapshot*.so dedup/_testing*.so; do
    # (grep without -q reads all of nm's output: -q would end it with SIGPIPE, a failure under pipefail)
    nm -D "$module" | grep __asan_report > /dev/null || { echo "$module is not instrumented" >&2; exit 1; }
done

LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export LD_PRELOAD
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$scratch/asan-report
export PYTHONMALLOC=malloc
export PYTHONPATH=$scratch
export OPENBLAS_NUM_THREADS=1
"$python" -c 'import dedup._records as m, sys; assert m.__file__.startswith(sys.argv[1]), m.__file__' "$scratch"

replay=(--replay tests/fuzz_corpus)
if [ -d "$crashes" ]; then
    replay+=(--replay "$crashes")
fi
echo "+ python -m dedup fuzz ${replay[*]}"
"$python" -m dedup fuzz "${replay[@]}" --crashes "$crashes"
echo "+ python -m dedup fuzz --seconds $seconds --seed $seed"
"$python" -m dedup fuzz --seconds "$seconds" --seed "$seed" --crashes "$crashes"
echo "+ pytest: the fuzz tests"
"$python" -m pytest -q -p no:cacheprovider tests/formats/test_records_fuzz.py tests/formats/test_snapshot_fuzz.py \
    tests/tools/test_fuzz_command.py tests/server/test_server_fuzz_findings.py tests/formats/test_snapshot_load_errors.py \
    tests/kernels/test_cpu_features.py tests/table/test_expiry_storage.py tests/table/test_table_order.py
echo "AddressSanitizer: clean"
