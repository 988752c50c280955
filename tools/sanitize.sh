#!/usr/bin/env bash
# Build fobmaml with AddressSanitizer + UndefinedBehaviorSanitizer in a fresh virtual
# environment, and run the test suite under them. Only the portable variant of the core
# is built (FOBMAML_AVX2=OFF halves the build); it is compiled from the same sources as
# the AVX2 variant. The flags are -O1 -g1: the optimization level ASan's documentation
# recommends, and line tables, which is what the reports' stack traces need (function,
# file and line, inlined frames included). Against RelWithDebInfo's -O2 -g they took half
# the CPU time to build (364 s -> 185 s, the MLP family's unit 140 s -> 75 s), for about
# 10% more CPU time in the tests (130 s -> 145 s).
#
#   tools/sanitize.sh                 # the whole suite (tests/)
#   tools/sanitize.sh tests/test_mlp.py -k hvp    # any pytest arguments
#
# Any sanitizer report aborts the run (halt_on_error, no recovery from UB), so a
# passing run means zero reports. Leak detection is off: CPython itself does not free
# everything at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FOBMAML_ASAN_VENV:-.venv-asan}
CXX_COMPILER=${CXX:-g++}

python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q ".[test]" \
  -Ccmake.define.FOBMAML_SANITIZE=ON \
  -Ccmake.define.FOBMAML_AVX2=OFF \
  -Ccmake.build-type=RelWithDebInfo \
  "-Ccmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -Cbuild-dir=build/asan

# The sanitizer runtimes must be loaded before the (uninstrumented) interpreter.
ASAN_LIB=$("$CXX_COMPILER" -print-file-name=libasan.so)
UBSAN_LIB=$("$CXX_COMPILER" -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:check_initialization_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Fewer threads than cores keeps the instrumented run responsive on small machines.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ "$#" -eq 0 ]; then set -- tests; fi
# --capture=sys: pytest's default fd-level capture would swallow a report written to
# file descriptor 2 by a process that the sanitizer then ends; this way it reaches the
# terminal.
python -m pytest -p no:cacheprovider -q --capture=sys "$@"
