"""The ``fobmaml`` command line (also ``python -m fobmaml``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _figure1(args: argparse.Namespace) -> int:
    from .experiments import figure1

    cfg = figure1.Figure1Config.quick_config() if args.quick else figure1.Figure1Config()
    cfg = figure1.with_overrides(
        cfg,
        m=args.m,
        n=args.n,
        kappa=args.kappa,
        lam=args.lam,
        delta=args.delta,
        steps_right=args.steps,
        iterations=args.iterations,
        seed=args.seed,
    )
    summary = figure1.run(args.out, cfg, progress=not args.no_progress)
    print(
        f"wrote {args.out}/figure1.png, figure1_left.csv, figure1_right.csv, "
        f"figure1_lr_tuning.csv, settings.json in {summary['seconds']['total']:.1f} s"
    )
    print("final exact meta-loss gap F(x_T) - F* after meta-training:")
    for label, gap in summary["right_final_gap"].items():
        print(f"  {label:32s} {gap:.3e}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import fobmaml

    print(json.dumps({"version": fobmaml.__version__, **fobmaml.build_info()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fobmaml", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    f1 = sub.add_parser("figure1", help="reproduce the paper's Figure 1 (quadratic tasks)")
    f1.add_argument("--out", default="figure1", help="output directory (default: ./figure1)")
    f1.add_argument("--quick", action="store_true", help="a small, seconds-long version")
    f1.add_argument("--m", type=int, help="number of tasks")
    f1.add_argument("--n", type=int, help="dimension")
    f1.add_argument("--kappa", type=float, help="condition number of the task Hessians")
    f1.add_argument("--lam", type=float, help="proximal strength lambda")
    f1.add_argument("--delta", type=float, help="FO-B-MAML finite-difference step")
    f1.add_argument("--steps", type=int, help="inner steps K for meta-training (right panel)")
    f1.add_argument("--iterations", type=int, help="outer iterations (right panel)")
    f1.add_argument("--seed", type=int, help="seed of the task draw")
    f1.add_argument("--no-progress", action="store_true", help="no progress bars")
    f1.set_defaults(func=_figure1)

    info = sub.add_parser("info", help="print the version and how the C++ core was built")
    info.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FloatingPointError) as exc:
        print(f"fobmaml {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
