"""The ``fobmaml`` command line (also ``python -m fobmaml``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

from .experiments._io import with_overrides


def _dask_spec(value: str) -> str:
    """``--dask``: ``local:N`` (N >= 1) or a scheduler address such as ``tcp://host:8786``."""
    if value.startswith("local:"):
        count = value[len("local:") :]
        if not (count.isdigit() and int(count) >= 1):
            raise argparse.ArgumentTypeError(
                f"expected local:N with N >= 1 workers (got {value!r})"
            )
        return value
    if value.startswith(("tcp://", "tls://")) and len(value) > len("tcp://"):
        return value
    raise argparse.ArgumentTypeError(
        f"expected local:N (a local cluster of N workers) or a scheduler address such as "
        f"tcp://host:8786 (got {value!r})"
    )


def _dask_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dask",
        type=_dask_spec,
        metavar="local:N|tcp://HOST:PORT",
        help="compute on a Dask cluster (bit-identical results): local:N starts a local cluster "
        "of N worker processes, tcp://HOST:PORT attaches to a running scheduler; needs "
        'pip install "fobmaml[dask]"',
    )


@contextlib.contextmanager
def _executor(spec: str | None) -> Iterator:
    """The DaskExecutor that ``--dask`` asks for (None without it), closed afterwards."""
    if spec is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            f'--dask needs Dask distributed: pip install "fobmaml[dask]" ({exc})'
        ) from exc
    from .distributed import DaskExecutor

    with contextlib.ExitStack() as stack:
        if spec.startswith("local:"):
            workers = int(spec[len("local:") :])
            threads = max(1, (os.cpu_count() or 1) // workers)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(spec, timeout=30))
        ex = DaskExecutor(client)
        stack.callback(ex.close)
        yield ex


def _figure1(args: argparse.Namespace) -> int:
    from .experiments import figure1

    cfg = figure1.Figure1Config.quick_config() if args.quick else figure1.Figure1Config()
    cfg = with_overrides(
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
    with _executor(args.dask) as ex:
        summary = figure1.run(args.out, cfg, progress=not args.no_progress, executor=ex)
    print(
        f"wrote {args.out}/figure1.png, figure1_left.csv, figure1_right.csv, "
        f"figure1_lr_tuning.csv, settings.json in {summary['seconds']['total']:.1f} s"
    )
    print("final exact meta-loss gap F(x_T) - F* after meta-training:")
    for label, gap in summary["right_final_gap"].items():
        print(f"  {label:32s} {gap:.3e}")
    return 0


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _metatrain_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--out", default=default_out, help=f"output directory (default: ./{default_out})"
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long version for smoke tests")
    p.add_argument(
        "--estimators",
        type=_csv,
        help="comma-separated, from: fobmaml, fobmaml-forward, fobmaml-linear, maml, fomaml, "
        "reptile, imaml, hfmaml",
    )
    p.add_argument(
        "--optimizer", help="outer optimizer: adam, sgd, momentum, clipped, normalized, sngdm"
    )
    p.add_argument("--outer-lr", type=float, help="outer step size")
    p.add_argument("--iterations", type=int, help="outer iterations (the same for every estimator)")
    p.add_argument(
        "--eval-every", type=int, help="evaluate on the held-out tasks every N iterations"
    )
    p.add_argument("--meta-batch", type=int, help="tasks per outer iteration")
    p.add_argument("--steps", type=int, help="inner steps K")
    p.add_argument("--inner-lr", type=float, help="inner step size")
    p.add_argument("--lam", type=float, help="proximal strength lambda")
    p.add_argument("--momentum", type=float, help="inner heavy-ball momentum")
    p.add_argument("--activation", help="relu or tanh")
    p.add_argument("--seed", type=int, help="seed of the task stream and the initialization")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _dask_arg(p)


def _common_overrides(args: argparse.Namespace) -> dict:
    return dict(
        estimators=args.estimators,
        optimizer=args.optimizer,
        outer_lr=args.outer_lr,
        iterations=args.iterations,
        eval_every=args.eval_every,
        meta_batch=args.meta_batch,
        steps=args.steps,
        inner_lr=args.inner_lr,
        lam=args.lam,
        momentum=args.momentum,
        activation=args.activation,
        seed=args.seed,
    )


def _sinusoid(args: argparse.Namespace) -> int:
    from .experiments import sinusoid

    cfg = sinusoid.SinusoidConfig.quick_config() if args.quick else sinusoid.SinusoidConfig()
    cfg = with_overrides(cfg, **_common_overrides(args))
    with _executor(args.dask) as ex:
        summary = sinusoid.run(args.out, cfg, progress=not args.no_progress, executor=ex)
    print(
        f"wrote {args.out}/sinusoid_curves.png, sinusoid_fits.png, sinusoid_curves.csv, "
        f"settings.json in {summary['seconds']:.1f} s"
    )
    print(
        f"held-out query MSE after K = {cfg.steps} adaptation steps "
        f"(no meta-training: {summary['no_meta_training']['mse_after_adaptation']:.3f}):"
    )
    for r in summary["results"].values():
        print(f"  {r['label']:24s} {r['mse_after_adaptation']:.3f}")
    return 0


def _mnist1d(args: argparse.Namespace) -> int:
    from .experiments import mnist1d_fewshot as exp

    if args.quick:
        cfg = (
            exp.MNIST1DConfig.quick_cnn_config()
            if args.model == "cnn"
            else exp.MNIST1DConfig.quick_config()
        )
    else:
        cfg = exp.MNIST1DConfig()
    cfg = with_overrides(
        cfg,
        model=args.model,
        channels=args.channels,
        n_way=args.n_way,
        k_shot=args.k_shot,
        q_query=args.q_query,
        **_common_overrides(args),
    )
    cfg.net()  # checks the model and its sizes before any work
    with _executor(args.dask) as ex:
        summary = exp.run(args.out, cfg, progress=not args.no_progress, executor=ex)
    print(
        f"wrote {args.out}/mnist1d_curves.png, mnist1d_curves.csv, settings.json "
        f"in {summary['seconds']:.1f} s"
    )
    print(
        f"held-out {cfg.n_way}-way {cfg.k_shot}-shot query accuracy after adaptation "
        f"(no meta-training: {summary['no_meta_training']['accuracy_after_adaptation']:.3f}, "
        f"chance {summary['chance']:.3f}):"
    )
    for r in summary["results"].values():
        print(f"  {r['label']:24s} {r['accuracy_after_adaptation']:.3f}")
    return 0


def _smoothness(args: argparse.Namespace) -> int:
    from .experiments import smoothness

    cfg = (
        smoothness.SmoothnessConfig.quick_config() if args.quick else smoothness.SmoothnessConfig()
    )
    cfg = with_overrides(
        cfg,
        lam=args.lam,
        hidden=args.hidden,
        iterations=args.iterations,
        method=args.method,
        seed=args.seed,
    )
    summary = smoothness.run(args.out, cfg, progress=not args.no_progress)
    env = summary["fit"]["envelope"]
    print(
        f"wrote {args.out}/smoothness.png, optimizers.png, CSVs and settings.json "
        f"in {summary['seconds']['total']:.1f} s"
    )
    print(
        f"local smoothness ~ L0 + L1 ||grad F||: least squares L0 = {summary['L0']:.3g}, "
        f"L1 = {summary['L1']:.3g}; envelope L0 = {env['L0']:.3g}, L1 = {env['L1']:.3g}"
    )
    for name, res in summary["optimizers"].items():
        print(f"  {name:12s} final held-out loss {res['final_test_loss']:.3f}")
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
    _dask_arg(f1)
    f1.set_defaults(func=_figure1)

    sn = sub.add_parser("sinusoid", help="few-shot sinusoid regression, every estimator")
    _metatrain_args(sn, "sinusoid")
    sn.set_defaults(func=_sinusoid)

    mn = sub.add_parser("mnist1d", help="MNIST-1D few-shot classification, every estimator")
    _metatrain_args(mn, "mnist1d")
    mn.add_argument("--n-way", type=int, help="classes per episode")
    mn.add_argument("--k-shot", type=int, help="support samples per class")
    mn.add_argument("--q-query", type=int, help="query samples per class")
    mn.add_argument(
        "--model",
        choices=("mlp", "cnn"),
        help="mlp: [40, 64, 64, n_way] (default); cnn: the MNIST-1D convolutional network",
    )
    mn.add_argument("--channels", type=int, help="the CNN's channels (default 64)")
    mn.set_defaults(func=_mnist1d)

    sm = sub.add_parser(
        "smoothness", help="local smoothness vs ||grad F||, and GD vs ClippedGD vs SNGDM"
    )
    sm.add_argument("--out", default="smoothness", help="output directory (default: ./smoothness)")
    sm.add_argument("--quick", action="store_true", help="a seconds-long version for smoke tests")
    sm.add_argument("--lam", type=float, help="proximal strength lambda")
    sm.add_argument("--hidden", type=int, help="hidden width of the [1, h, h, 1] tanh network")
    sm.add_argument("--iterations", type=int, help="outer iterations of each optimizer")
    sm.add_argument("--method", help="power (default) or difference")
    sm.add_argument("--seed", type=int, help="seed")
    sm.add_argument("--no-progress", action="store_true", help="no progress bars")
    sm.set_defaults(func=_smoothness)

    info = sub.add_parser("info", help="print the version and how the C++ core was built")
    info.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FloatingPointError, RuntimeError, ImportError, OSError) as exc:
        print(f"fobmaml {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
