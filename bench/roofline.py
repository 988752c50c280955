"""How close the kernels come to the machine: bandwidth for quadratics, GFLOP/s for MLPs.

Usage::

    python bench/roofline.py [--out DIR] [--quick]

In one run:

- a STREAM-like triad ``a = b + 3 c`` (C++, OpenMP, the same compiler flags as the
  kernels; 24 bytes per element) on 1 and on all threads;
- the quadratic inner loop on m = 8 tasks of n = 2000, K = 20 (each A_i is 32 MB, so
  every step streams it from memory): FO-MAML reads every A_i K + 1 times (K inner
  steps and one query gradient); the achieved bandwidth is those bytes over the time
  of one call, reported as a fraction of the triad's on the same number of threads.
  Symmetric FO-B-MAML iterates psi+ and psi- in one pass over A_i per step (K passes);
- the MLP kernels' GFLOP/s on sinusoid (m = 25, [1, 40, 40, 1], 10-shot, K = 5) and
  MNIST-1D (5-way 5-shot, 16 episodes, [40, 64, 64, 5], K = 10), from a flop model
  of the forward and backward passes (2 k d_l d_{l-1} multiply-adds per layer forward,
  twice that backward; activations and the loss not counted);
- the convolutional kernels: the support gradients of the MNIST-1D CNN with 256 channels
  (16 episodes of 25 samples), in GFLOP/s from the same flop model (no input gradient
  below the first layer), against a plain Eigen GEMM of the shape of the dominant
  product (the second Conv1d: 256 x 768 weights times 768 x 250 columns), timed in the
  same run with the same flags and threads;
- one Conv1d forward pass (one thread) as im2col + one GEMM, as the kernels compute it,
  against a direct form (one GEMM per sample and kernel tap) on the CNN's two layers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _measure import best_time, machine, write_json

import fobmaml as fm
from fobmaml.peers import problems as P


def triad(threads: int, n: int) -> float:
    return float(fm._core.stream_triad(n, 10, threads))


def quadratic(threads: int, n: int, K: int, repeat: int) -> dict:
    tasks = fm.datasets.quadratic_tasks(8, n, kappa=100.0, seed=0)
    inner = fm.InnerLoop(steps=K, lr=0.5, lam=1.0)
    x = np.zeros(n)
    out = {}
    with fm.num_threads(threads):
        for name, est, passes in (
            ("FOMAML", fm.FOMAML(inner), K + 1),
            ("FOBMAML(symmetric)", fm.FOBMAML(inner, scheme="symmetric"), K),
        ):
            t = best_time(lambda est=est: est.meta_gradient(x, tasks), repeat)
            gbytes = 8 * passes * n * n * 8 / 1e9
            out[name] = {"seconds": t, "gb_per_s": gbytes / t}
    return out


def mlp_flops(layers, k: int) -> float:
    macs = sum(a * b for a, b in zip(layers[:-1], layers[1:]))
    return 6.0 * k * macs  # forward 2 k macs, backward 4 k macs


def mlp(threads: int, repeat: int) -> dict:
    out = {}
    sin = fm.datasets.sinusoid(25, 10, 10, layers=[1, 40, 40, 1], activation="tanh")
    mn = fm.datasets.mnist1d_fewshot(5, 5, 15, "train", meta_batch=16, activation="tanh")
    cases = (
        (
            "sinusoid",
            sin(np.random.default_rng(0)),
            [1, 40, 40, 1],
            10,
            10,
            fm.InnerLoop(steps=5, lr=0.025, lam=20.0),
        ),
        (
            "mnist1d",
            mn(np.random.default_rng(0)),
            [40, 64, 64, 5],
            25,
            75,
            fm.InnerLoop(steps=10, lr=0.1, lam=2.0),
        ),
    )
    with fm.num_threads(threads):
        for label, tasks, layers, ks, kq, inner in cases:
            x = fm.mlp.init_params(layers, seed=0)
            est = fm.FOMAML(inner)
            t = best_time(lambda est=est, x=x, tasks=tasks: est.meta_gradient(x, tasks), repeat)
            flops = tasks.num_tasks * (inner.steps * mlp_flops(layers, ks) + mlp_flops(layers, kq))
            out[label] = {"estimator": "FOMAML", "seconds": t, "gflop_per_s": flops / t / 1e9}
    return out


def cnn(channels: int):
    """The MNIST-1D CNN, its support tasks (16 episodes x 25) and its layers' MACs per sample."""
    net = P.cnn(channels)
    tasks = fm.datasets.mnist1d_fewshot(5, 5, 5, meta_batch=16, net=net, num_samples=5000)(
        np.random.default_rng(0)
    )
    nn = fm.nn
    shapes = net.shapes((1, 40))
    macs = []
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Conv1d):
            macs.append(
                layer.out_channels * layer.in_channels * layer.kernel_size * shapes[i + 1][1]
            )
        elif isinstance(layer, nn.Linear):
            macs.append(layer.out_features * layer.in_features)
    return net, tasks, macs


def conv(threads: int, repeat: int, channels: int) -> dict:
    """GFLOP/s of the CNN's support gradients against a plain GEMM of the dominant shape."""
    net, tasks, macs = cnn(channels)
    k = tasks.X_support.shape[1]
    # forward 2 k MACs per layer; backward 2 k MACs for the weights of every layer and
    # 2 k MACs for the input of every layer but the first.
    flops = tasks.num_tasks * 2.0 * k * (2 * macs[0] + 3 * sum(macs[1:]))
    x = net.init_params(seed=0)
    with fm.num_threads(threads):
        t = best_time(lambda: tasks.gradients(x), repeat)
    rows, depth, cols = channels, channels * 3, 10 * k
    gemm = float(fm._core.gemm_gflops(rows, depth, cols, max(repeat, 5), threads))
    return {
        "channels": channels,
        "seconds": t,
        "gflop_per_s": flops / t / 1e9,
        "gemm_shape": [rows, depth, cols],
        "gemm_gflop_per_s": gemm,
        "fraction_of_gemm": flops / t / 1e9 / gemm,
    }


def conv_forms(repeat: int) -> dict:
    """One Conv1d forward pass, im2col + GEMM against the direct form, one thread."""
    out = {}
    for C in (64, 256):
        for label, args in (
            (f"conv1 (1->{C}, K=5, stride 2)", (1, C, 5, 2, 1, 40)),
            (f"conv2 ({C}->{C}, K=3, stride 2)", (C, C, 3, 2, 1, 19)),
        ):
            im2col, direct, diff = fm._core.conv1d_forms(*args, 25, max(repeat, 5))
            out[label] = {
                "im2col_s": im2col,
                "direct_s": direct,
                "direct_over_im2col": direct / im2col,
                "max_abs_difference": diff,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/roofline")
    ap.add_argument("--quick", action="store_true", help="n = 500, fewer repeats")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, repeat, triad_n = (500, 3, 4_000_000) if args.quick else (2000, 5, 40_000_000)
    all_threads = fm.get_num_threads()
    report = {"machine": machine(), "n": n, "K": 20, "runs": {}}
    for threads in sorted({1, all_threads}):
        bw = triad(threads, triad_n)
        q = quadratic(threads, n, 20, repeat)
        m = mlp(threads, repeat)
        c = conv(threads, repeat, 64 if args.quick else 256)
        report["runs"][threads] = {"triad_gb_per_s": bw, "quadratic": q, "mlp": m, "conv": c}
        print(f"threads = {threads}: STREAM triad {bw:.1f} GB/s")
        for name, r in q.items():
            print(
                f"  quadratic n={n} K=20 {name:20s} {r['seconds'] * 1e3:8.1f} ms "
                f"{r['gb_per_s']:6.1f} GB/s = {r['gb_per_s'] / bw:5.0%} of triad"
            )
        for name, r in m.items():
            print(
                f"  {name:10s} {r['estimator']:8s} {r['seconds'] * 1e3:8.2f} ms "
                f"{r['gflop_per_s']:6.1f} GFLOP/s ({r['gflop_per_s'] / threads:.1f} per thread)"
            )
        print(
            f"  CNN {c['channels']} channels, support gradients: {c['gflop_per_s']:6.1f} GFLOP/s;"
            f" plain GEMM {tuple(c['gemm_shape'])}: {c['gemm_gflop_per_s']:6.1f} GFLOP/s;"
            f" {c['fraction_of_gemm']:.0%} of it"
        )
    report["conv_forms"] = conv_forms(repeat)
    for label, r in report["conv_forms"].items():
        print(
            f"  Conv1d forward {label:32s} im2col {r['im2col_s'] * 1e3:7.2f} ms, "
            f"direct {r['direct_s'] * 1e3:7.2f} ms ({r['direct_over_im2col']:.2f}x)"
        )
    write_json(out / "roofline.json", report)
    print(f"wrote {out}/roofline.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
