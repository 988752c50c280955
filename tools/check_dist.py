"""Check the member lists of fobmaml's sdist and wheel.

    python tools/check_dist.py sdist dist/fobmaml-X.tar.gz [--tracked FILE]
    python tools/check_dist.py wheel dist/fobmaml-X-cp311-cp311-manylinux_2_N_x86_64.whl

sdist: it holds the build files, the C++ sources, the vendored Eigen headers, and every
licence file the metadata declares; with ``--tracked`` (the output of ``git ls-files``),
every tracked file.

wheel: it holds the package, the compiled core (both variants on x86-64), the ``py.typed``
marker, every declared licence file under ``.dist-info/licenses/``, and on Linux the
vendored OpenMP runtime; it holds no C++ sources, tests or build leftovers.

Prints what it checked and exits non-zero on the first list of problems.
"""

from __future__ import annotations

import argparse
import email.parser
import fnmatch
import re
import sys
import tarfile
import zipfile

# Files a wheel built from the sdist needs: if one is missing the build would fail, but say
# which one.
SDIST_REQUIRED = [
    "pyproject.toml",
    "CMakeLists.txt",
    "README.md",
    "LICENSE",
    "PKG-INFO",
    "python/fobmaml/__init__.py",
    "python/fobmaml/_version.py",
    "python/fobmaml/py.typed",
    "cpp/bindings/core.cpp",
    "cpp/include/fobmaml/estimators.hpp",
    "cpp/third_party/eigen/Eigen/Core",
    "cpp/third_party/eigen/Eigen/src/Core/Matrix.h",
    "cpp/third_party/eigen/COPYING.MPL2",
]


def _declared_licences(metadata_text: str) -> list[str]:
    msg = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    files = msg.get_all("License-File") or []
    if "LICENSE" not in files or not any(f.endswith("COPYING.MPL2") for f in files):
        raise SystemExit(f"License-File entries lack LICENSE or Eigen's COPYING.MPL2: {files}")
    return files


def check_sdist(path: str, tracked_file: str | None) -> list[str]:
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1:
            return [f"the sdist should have one top-level folder, has {sorted(roots)}"]
        root = roots.pop()
        members = {n.split("/", 1)[1] for n in names if "/" in n}
        pkg_info = tar.extractfile(f"{root}/PKG-INFO").read().decode()
    problems = [f"missing {f}" for f in SDIST_REQUIRED if f not in members]
    licences = _declared_licences(pkg_info)
    problems += [f"missing licence file {f}" for f in licences if f not in members]
    tracked = []
    if tracked_file:
        with open(tracked_file, encoding="utf-8") as fh:
            tracked = [line.strip() for line in fh if line.strip()]
        problems += [
            f"tracked by git but not in the sdist: {f}" for f in tracked if f not in members
        ]
    print(
        f"sdist {path}: {len(members)} files; {len(licences)} licence files; "
        f"{len(tracked)} tracked files checked"
    )
    return problems


def check_wheel(path: str) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        members = set(whl.namelist())
        (meta_name,) = [n for n in members if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        metadata = whl.read(meta_name).decode()
        wheel_info = whl.read(meta_name.replace("METADATA", "WHEEL")).decode()
    dist_info = meta_name.split("/", 1)[0]
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")
    ]
    problems = []

    def need(pattern: str, what: str) -> list[str]:
        found = sorted(fnmatch.filter(members, pattern))
        if not found:
            problems.append(f"missing {what} ({pattern})")
        return found

    need("fobmaml/__init__.py", "the package")
    need("fobmaml/py.typed", "the py.typed marker")
    cores = need("fobmaml/_core.*", "the compiled core")
    if any("x86_64" in t for t in tags):
        cores += need("fobmaml/_core_avx2.*", "the AVX2 build of the core")
    licences = _declared_licences(metadata)
    for f in licences:
        need(f"{dist_info}/licenses/{f}", f"licence file {f}")
    vendored = []
    if any("linux" in t for t in tags):
        if not all(t.split("-")[-1].startswith("manylinux_") for t in tags):
            problems.append(f"not a manylinux wheel: tags {tags} (run auditwheel repair)")
        vendored = need("fobmaml.libs/libgomp*.so*", "the vendored OpenMP runtime (libgomp)")
    stray = [
        n
        for n in members
        if n.endswith((".cpp", ".hpp", ".o", ".a", "CMakeCache.txt")) or n.startswith("tests/")
    ]
    if stray:
        problems.append(f"sources or build leftovers in the wheel: {sorted(stray)[:10]}")
    print(
        f"wheel {path}: tags {tags}; cores {cores}; {len(licences)} licence files; "
        f"vendored {vendored}"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["sdist", "wheel"])
    parser.add_argument("path")
    parser.add_argument("--tracked", help="file listing the tracked files (git ls-files)")
    args = parser.parse_args(argv)
    if args.kind == "sdist":
        problems = check_sdist(args.path, args.tracked)
    else:
        if args.tracked:
            parser.error("--tracked applies to the sdist only")
        problems = check_wheel(args.path)
    for p in problems:
        print(f"  PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
