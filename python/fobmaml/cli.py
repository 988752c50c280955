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
        pool=args.pool,
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


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers (got {value!r})"
        ) from None


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers (got {value!r})"
        ) from None


def _sweep(args: argparse.Namespace) -> int:
    from .experiments import sweep

    cfg = sweep.SweepConfig.quick_config() if args.quick else sweep.SweepConfig()
    cfg = with_overrides(
        cfg,
        kappas=args.kappas,
        lams=args.lams,
        steps=args.steps,
        momentum=args.momentum,
        delta=args.delta,
        eps=args.eps,
        m=args.m,
        n=args.n,
        seed=args.seed,
    )
    summary = sweep.run(args.out, cfg, progress=not args.no_progress)
    print(
        f"wrote {args.out}/estimator_error.csv, heatmap_vs_imaml_cg5.png, heatmap_vs_maml.png, "
        f"settings.json in {summary['seconds']['total']:.1f} s"
    )
    print("grid points where symmetric FO-B-MAML is more accurate than:")
    for beta, per in summary["comparisons"].items():
        wins = ", ".join(f"{k} {v['wins']}/{v['points']}" for k, v in per.items())
        print(f"  momentum {beta}: {wins}")
    return 0


def _delta(args: argparse.Namespace) -> int:
    from .experiments import delta_tradeoff

    cfg = delta_tradeoff.DeltaConfig.quick_config() if args.quick else delta_tradeoff.DeltaConfig()
    cfg = with_overrides(
        cfg, deltas=args.deltas, steps=args.steps, sigmas=args.sigmas, seed=args.seed
    )
    summary = delta_tradeoff.run(args.out, cfg, progress=not args.no_progress)
    print(
        f"wrote {args.out}/delta_error.csv, delta_best.csv, bias_slopes.csv, delta_tradeoff.png, "
        f"settings.json in {summary['seconds']:.1f} s"
    )
    for name, slope in summary["bias_exponents"].items():
        print(f"  bias exponent, {name:24s} {slope:.2f}")
    for scheme, s in summary["best_delta_scaling"].items():
        print(
            f"  {scheme}: best delta ~ eps^{s['best_delta_exponent']:.2f}, "
            f"error at best delta ~ eps^{s['best_error_exponent']:.2f}"
        )
    return 0


def _stability(args: argparse.Namespace) -> int:
    from .experiments import outer_stability as st

    if args.replot:
        print(f"redrew {st.replot(args.out)} from the CSVs in {args.out}")
        return 0
    cfg = st.StabilityConfig.quick_config() if args.quick else st.StabilityConfig()
    cfg = with_overrides(
        cfg,
        families=args.families,
        optimizers=args.optimizers,
        lrs=args.lrs,
        seeds=args.seeds,
        smoothness=None if args.smoothness is None else st.smoothness_fit(args.smoothness),
    )
    summary = st.run(args.out, cfg, progress=not args.no_progress)
    print(
        f"wrote {args.out}/stability_runs.csv, stability_loss.csv, stability_ranges.csv, "
        f"stability.png, settings.json in {summary['seconds']:.1f} s "
        f"({summary['runs']} runs, {summary['diverged_runs']} diverged)"
    )
    print(f"step sizes within {cfg.within:.0%} of each optimizer's best held-out loss:")
    for key, r in summary["ranges"].items():
        if r["lr_min"] == "":
            print(f"  {key:24s} diverged at every step size")
        else:
            print(
                f"  {key:24s} {r['lr_min']:.3g} .. {r['lr_max']:.3g} "
                f"({r['decades']:.2f} decades), best {r['best_loss']:.4g} at {r['best_lr']:.3g}"
            )
    return 0


def _report(args: argparse.Namespace) -> int:
    from .experiments import reproduction

    for name, table in reproduction.tables(args.docs).items():
        print(f"<!-- {name}: generated by `fobmaml report --docs {args.docs}` -->")
        print(table)
        print()
    return 0


def _memory(args: argparse.Namespace) -> int:
    from .experiments import memory

    if args.replot:
        memory.replot(args.out)
        print(f"redrew {args.out}/memory.png and time.png from memory.csv")
        return 0
    cfg = memory.MemoryConfig.quick_config() if args.quick else memory.MemoryConfig()
    cfg = with_overrides(
        cfg,
        channels=None if args.channels is None else tuple(args.channels),
        steps=None if args.steps is None else tuple(args.steps),
        peers=() if args.no_peers else (None if args.peers is None else tuple(args.peers)),
        limit_gib=args.limit_gib,
        time_limit=args.time_limit,
        timeout=args.timeout,
        threads=args.threads,
    )
    memory.run(args.out, cfg, progress=True, resume=args.resume)
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
    mn.add_argument("--pool", choices=("max", "avg"), help="the CNN's pooling layer (default max)")
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

    sw = sub.add_parser(
        "sweep", help="estimator error over (kappa, lambda, K, momentum) on quadratic tasks"
    )
    sw.add_argument("--out", default="sweep", help="output directory (default: ./sweep)")
    sw.add_argument("--quick", action="store_true", help="a small grid, seconds long")
    sw.add_argument("--kappas", type=_floats, help="comma-separated condition numbers (>= 1)")
    sw.add_argument("--lams", type=_floats, help="comma-separated proximal strengths (> 0)")
    sw.add_argument("--steps", type=_ints, help="comma-separated inner step counts K")
    sw.add_argument("--momentum", type=float, help="the inner momentum beta > 0 of the grid")
    sw.add_argument("--delta", type=float, help="FO-B-MAML finite-difference step")
    sw.add_argument("--eps", type=float, help="HF-MAML finite-difference step")
    sw.add_argument("--m", type=int, help="number of tasks")
    sw.add_argument("--n", type=int, help="dimension")
    sw.add_argument("--seed", type=int, help="seed of the task draw")
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")
    sw.set_defaults(func=_sweep)

    dl = sub.add_parser(
        "delta", help="FO-B-MAML's error against delta: bias, inner-loop error, best delta"
    )
    dl.add_argument("--out", default="delta", help="output directory (default: ./delta)")
    dl.add_argument("--quick", action="store_true", help="a seconds-long version")
    dl.add_argument("--deltas", type=_floats, help="comma-separated finite-difference steps")
    dl.add_argument("--steps", type=_ints, help="comma-separated inner step counts K")
    dl.add_argument("--sigmas", type=_floats, help="comma-separated relative gradient noise")
    dl.add_argument("--seed", type=int, help="seed of the task draw and the noise")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    dl.set_defaults(func=_delta)

    so = sub.add_parser(
        "stability", help="outer optimizers over a grid of step sizes (sinusoid, MNIST-1D)"
    )
    so.add_argument("--out", default="stability", help="output directory (default: ./stability)")
    so.add_argument("--quick", action="store_true", help="a seconds-long version")
    so.add_argument("--families", type=_csv, help="comma-separated, from: sinusoid, mnist1d")
    so.add_argument(
        "--optimizers",
        type=_csv,
        help="comma-separated, from: GD, Momentum, Adam, ClippedGD, NormalizedGD, SNGDM",
    )
    so.add_argument("--lrs", type=_floats, help="comma-separated outer step sizes")
    so.add_argument("--seeds", type=_ints, help="comma-separated seeds")
    so.add_argument(
        "--smoothness",
        help="settings.json of a `fobmaml smoothness` run: relate the ranges to its (L0, L1) fit",
    )
    so.add_argument(
        "--replot",
        action="store_true",
        help="only redraw stability.png from the CSVs and settings.json already in --out",
    )
    so.add_argument("--no-progress", action="store_true", help="no progress bars")
    so.set_defaults(func=_stability)

    rp = sub.add_parser(
        "report", help="print the reproduction report's tables (Markdown) from the result folders"
    )
    rp.add_argument(
        "--docs",
        default="docs",
        help="folder holding sweep/, delta/, stability/ and figure1/ (default: ./docs)",
    )
    rp.set_defaults(func=_report)

    me = sub.add_parser(
        "memory", help="extra peak memory and time of one meta-gradient on the MNIST-1D CNN"
    )
    me.add_argument("--out", default="memory", help="output directory (default: ./memory)")
    me.add_argument(
        "--quick", action="store_true", help="small channels and K, fobmaml only (seconds a point)"
    )
    me.add_argument("--no-peers", action="store_true", help="fobmaml only, even with torch/JAX")
    me.add_argument(
        "--peers", nargs="+", metavar="NAME", help="peers to run when installed (default: all)"
    )
    me.add_argument(
        "--channels", type=int, nargs="+", metavar="C", help="sweep (a): channels at K = 10"
    )
    me.add_argument(
        "--steps", type=int, nargs="+", metavar="K", help="sweep (b): inner steps at C = 256"
    )
    me.add_argument(
        "--limit-gib",
        type=float,
        help="skip a run predicted to need more extra memory than this (default 16)",
    )
    me.add_argument(
        "--time-limit",
        type=float,
        help="skip a run predicted to take longer than this many seconds (default 900)",
    )
    me.add_argument("--timeout", type=float, help="seconds one run may take (default 1800)")
    me.add_argument(
        "--threads",
        type=int,
        help="threads of every implementation: fobmaml, torch, XLA (default: each its own)",
    )
    me.add_argument(
        "--replot", action="store_true", help="redraw the plots from --out's memory.csv"
    )
    me.add_argument(
        "--resume", action="store_true", help="keep the runs of --out's memory.csv, run the rest"
    )
    me.set_defaults(func=_memory)

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
