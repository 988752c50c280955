#!/usr/bin/env bash
# Build the documentation site into build/docs with Sphinx; any warning fails the build.
# Needs fobmaml installed (the API page imports it) and its `docs` extra:
#   python -m pip install ".[docs]" && tools/build_docs.sh
# Extra arguments go to sphinx-build (e.g. -E to rebuild every page).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/docs
python -m sphinx -W --keep-going -b html docs build/docs "$@"
echo "docs: build/docs/index.html"
