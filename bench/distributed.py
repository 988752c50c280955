"""The Dask executor against in-process: time per iteration, bytes per iteration, projection.

Usage::

    python bench/distributed.py [--out DIR] [--quick] [--repeat R] [--iterations T]

The body is in ``bench/_distributed.py`` (its docstring says what is measured and how);
the results go to ``docs/bench/distributed/`` (``distributed.json``, ``projection.csv``).

This file shares its name with Dask's package, ``distributed``. Wherever ``bench/`` comes
before site-packages on ``sys.path`` (in this script's own process and the worker processes
it starts; in pytest, whose ``pythonpath`` holds ``bench/``), ``import distributed`` finds
this file: imported under that name, it loads Dask's package in its own place.
"""

import os
import sys

if __name__ == "distributed":  # imported as Dask's package: load that one instead
    import importlib.machinery
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    _spec = importlib.machinery.PathFinder.find_spec("distributed", _path)
    if _spec is None:
        raise ModuleNotFoundError("No module named 'distributed'", name="distributed")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["distributed"] = _module
    _spec.loader.exec_module(_module)

elif __name__ == "__main__":
    from _distributed import main

    raise SystemExit(main())
