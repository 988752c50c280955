#!/usr/bin/env bash
# Build fobmaml's release artefacts the way a user receives them, and prove that they work.
#
#   tools/check_wheel.sh [OUT]      # artefacts in OUT (default: dist/), tools in .venv-release
#
# 1. Configuration: validate-pyproject checks pyproject.toml against the schemas of its
#    tables (project metadata and trove classifiers, [tool.scikit-build], [tool.cibuildwheel],
#    [tool.ruff], ...), and cibuildwheel prints the wheels it would build on Linux and macOS.
# 2. The sdist, and a wheel built from the unpacked sdist (`python -m build`), never from the
#    tree: a file missing from the sdist fails here. The sdist must hold every file git tracks,
#    Eigen and the licence files.
# 3. auditwheel repairs the wheel into the most widely compatible manylinux tag that the
#    binary's symbol versions allow, vendoring libgomp; `auditwheel show` reports it. The wheel
#    must hold both cores, py.typed and the licence files; twine checks both archives' metadata.
# 4. A fresh virtual environment installs the repaired wheel, and tools/smoke_test.py runs from
#    an empty directory outside the source tree (import, FO-B-MAML against Exact on each core,
#    `fobmaml figure1 --quick`). mypy, run on a small user script, sees the package's types.
#
# This builds the wheel with the machine's compiler and glibc (here Debian 12, glibc 2.36), so
# the tag is what that toolchain allows. Wheels for an index come from cibuildwheel's
# manylinux containers (docs/releasing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-dist}")
VENV=$(realpath -m "${FOBMAML_RELEASE_VENV:-.venv-release}")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fobmaml-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say() { printf '\n--- check_wheel [%ss]: %s\n' "$SECONDS" "$*"; }

say "tools (dependency group 'release') in $VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --group release
export PATH="$VENV/bin:$PATH"

say "1. configuration"
validate-pyproject pyproject.toml
for platform in linux macos; do
  echo "cibuildwheel --platform $platform:"
  cibuildwheel --print-build-identifiers --platform "$platform" . | sed 's/^/  /'
done

say "2. sdist, then a wheel built from the sdist"
rm -rf "$OUT"
mkdir -p "$OUT/unrepaired"
python -m build --outdir "$OUT/unrepaired" .
mv "$OUT"/unrepaired/*.tar.gz "$OUT/"
SDIST=$(ls "$OUT"/fobmaml-*.tar.gz)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files >"$WORK/tracked.txt"
  python tools/check_dist.py sdist "$SDIST" --tracked "$WORK/tracked.txt"
else
  python tools/check_dist.py sdist "$SDIST"
fi

say "3. auditwheel repair (libgomp vendored) and the wheel's contents"
auditwheel repair --wheel-dir "$OUT" "$OUT"/unrepaired/fobmaml-*.whl
WHEEL=$(ls "$OUT"/fobmaml-*manylinux*.whl)
auditwheel show "$WHEEL"
python tools/check_dist.py wheel "$WHEEL"
twine check --strict "$SDIST" "$WHEEL"

say "4. install the repaired wheel in a fresh virtual environment; smoke test outside the tree"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$WHEEL"
mkdir "$WORK/run"
cp tools/smoke_test.py "$WORK/run/"
(cd "$WORK/run" && "$WORK/venv/bin/python" smoke_test.py "$WORK/run/figure1")

# py.typed: mypy type-checks a user's script against the installed package. Without the
# marker mypy would report the import ("missing library stubs or py.typed marker") instead
# of the wrong argument type on the last line.
cat >"$WORK/run/typed_user.py" <<'EOF'
import numpy as np

import fobmaml as fm

previous: int = fm.set_num_threads(1)
tasks = fm.datasets.quadratic_tasks(m=2, n=3, kappa=10.0, seed=0)
g = fm.FOBMAML(fm.InnerLoop(steps=5, lr=0.1, lam=1.0), delta=1e-3).meta_gradient(np.zeros(3), tasks)
fm.set_num_threads("two")
EOF
(cd "$WORK/run" && mypy --python-executable "$WORK/venv/bin/python" --no-incremental \
  typed_user.py >mypy.txt) && status=0 || status=$?
cat "$WORK/run/mypy.txt"
expected='typed_user.py:8: error: Argument 1 to "set_num_threads" has incompatible type "str"; expected "int"  [arg-type]'
if [ "$status" -ne 1 ] || [ "$(grep -c ': error:' "$WORK/run/mypy.txt")" -ne 1 ] ||
  ! grep -qxF "$expected" "$WORK/run/mypy.txt"; then
  echo "mypy should report exactly: $expected" >&2
  exit 1
fi
echo "ok    mypy reads the installed package's types (py.typed)"

say "passed: $(basename "$SDIST") and $(basename "$WHEEL") in $OUT"
