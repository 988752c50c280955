"""The sequential-network family (``fm.nn``, ``fm.NetTasks``) against an independent NumPy
reference (``tests/net_reference.py``), central finite differences and torch (when it is
installed): every layer's forward pass, gradients and HVPs, ``init_params``, every
estimator with and without momentum, the MLP special case, threads, workspaces, training,
the MNIST-1D convolutional input option, and bad input."""

from __future__ import annotations

import extras
import mlp_reference as mref
import net_reference as nref
import numpy as np
import pytest

import fobmaml as fm

nn = fm.nn


ref_layers = nref.layers_of


def small_cnn(act=nn.Tanh) -> fm.nn.Sequential:
    """Every layer kind, odd sizes: input (2, 17) -> (3,)."""
    return nn.Sequential(
        nn.Conv1d(2, 3, kernel_size=3, stride=2, padding=1),
        act(),
        nn.MaxPool1d(2),
        nn.Conv1d(3, 4, kernel_size=2, padding="same"),
        act(),
        nn.AvgPool1d(2, stride=1),
        nn.Flatten(),
        nn.Linear(4 * 3, 3),
    )


INPUT = (2, 17)

NETS = {
    "cnn-tanh": lambda: small_cnn(nn.Tanh),
    "cnn-relu": lambda: small_cnn(nn.ReLU),
    "conv-only": lambda: nn.Sequential(
        nn.Conv1d(2, 2, kernel_size=5, stride=3, padding=2, bias=False), nn.Tanh(), nn.Flatten()
    ),
    "pool-first": lambda: nn.Sequential(
        nn.Conv1d(2, 3, kernel_size=1),
        nn.MaxPool1d(3, stride=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 8, 2, bias=False),
    ),
    "mlp": lambda: nn.Sequential(
        nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)
    ),
}
SHAPES = {"mlp": (5,)}


def make(rng, name="cnn-tanh", loss="xent", m=3, k=5, kq=4, sep=True, scale=1.0):
    net = NETS[name]()
    shape = SHAPES.get(name, INPUT)
    out = net.output_shape(shape)[0]
    Xs = rng.standard_normal((m, k, *shape))
    Xq = rng.standard_normal((m, kq, *shape)) if sep else None
    if loss == "xent":
        Ys = rng.integers(0, out, (m, k))
        Yq = rng.integers(0, out, (m, kq)) if sep else None
    else:
        Ys = rng.standard_normal((m, k, out))
        Yq = rng.standard_normal((m, kq, out)) if sep else None
    tasks = fm.NetTasks(Xs, Ys, Xq, Yq, net, loss=loss)
    rnet = nref.Net(ref_layers(net), loss)
    x = scale * net.init_params(seed=int(rng.integers(1000)))
    return tasks, nref.task_list(rnet, Xs, Ys, Xq, Yq), rnet, x


# ----------------------------------------------------------------------------------------
# Layers: shapes and forward passes
# ----------------------------------------------------------------------------------------


def test_shapes_follow_torchs_formulas():
    net = nn.Sequential(
        nn.Conv1d(1, 64, kernel_size=5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(64 * 5, 5),
    )
    # L_out = (L + 2p - K) // s + 1: 40 -> 19 -> 10 -> 5 (pool) -> 320.
    assert net.shapes((1, 40)) == [
        (1, 40),
        (64, 19),
        (64, 19),
        (64, 10),
        (64, 10),
        (64, 5),
        (320,),
        (5,),
    ]
    assert net.num_params == (64 * 5 + 64) + (64 * 64 * 3 + 64) + (320 * 5 + 5)
    assert net.input_shape == (1, None)
    assert net.parameter_shapes()[:3] == [
        ("0.weight", (64, 1, 5)),
        ("0.bias", (64,)),
        ("2.weight", (64, 64, 3)),
    ]
    # "same" with an even kernel pads one more zero on the right, as torch does.
    assert nn.Conv1d(2, 2, 4, padding="same").pads() == (1, 2)
    assert nn.Sequential(nn.Conv1d(2, 3, 4, padding="same"), nn.Flatten()).output_shape((2, 9)) == (
        27,
    )


@pytest.mark.parametrize("name", list(NETS))
def test_forward_matches_numpy_reference(rng, name):
    tasks, _, rnet, x = make(rng, name)
    X = tasks.X_support[0]
    np.testing.assert_allclose(tasks.net.predict(x, X), rnet.predict(x, X), rtol=1e-12, atol=1e-13)
    # Any leading shape: (m, k, ...) at once equals one task at a time (to rounding: the
    # products run on blocks of another size).
    both = tasks.net.predict(x, tasks.X_support)
    assert both.shape == (*tasks.X_support.shape[:2], rnet.predict(x, X).shape[1])
    np.testing.assert_allclose(both[0], tasks.net.predict(x, X), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "layer",
    [
        ("conv1d", 3, 4, 3, 1, 0, 0, True),
        ("conv1d", 3, 2, 4, 3, 2, 2, True),
        ("conv1d", 3, 2, 2, 1, 5, 5, False),  # padding wider than the kernel
        ("maxpool1d", 3, 2),
        ("maxpool1d", 2, 3),
        ("avgpool1d", 4, 1),
        ("relu",),
        ("tanh",),
    ],
)
def test_each_layer_forward_matches_the_reference(rng, layer):
    lib = {
        "conv1d": lambda _, i, o, K, s, pl, pr, b: nn.Conv1d(i, o, K, stride=s, padding=pl, bias=b),
        "maxpool1d": lambda _, K, s: nn.MaxPool1d(K, s),
        "avgpool1d": lambda _, K, s: nn.AvgPool1d(K, s),
        "relu": lambda _: nn.ReLU(),
        "tanh": lambda _: nn.Tanh(),
    }[layer[0]](*layer)
    net = nn.Sequential(nn.Conv1d(3, 3, 1), lib, nn.Flatten())
    X = rng.standard_normal((6, 3, 11))
    x = net.init_params(seed=3) * 3
    got = net.predict(x, X)
    want = nref.predict(x, X, ref_layers(net))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_max_pool_routes_through_the_first_maximum_on_a_tie():
    # conv (w0, w1) on x = (1, 5, 1) gives (w0 + 5 w1, 5 w0 + w1) = (6, 6) at w = (1, 1): a
    # tie. Through position 0, d out / d w = (x0, x1) = (1, 5); through position 1, (5, 1).
    net = nn.Sequential(
        nn.Conv1d(1, 1, 2, bias=False), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(1, 1, bias=False)
    )
    X = np.array([[[[1.0, 5.0, 1.0]]]])
    Y = np.array([[[2.0]]])
    tasks = fm.NetTasks(X, Y, net=net, loss="mse")
    x = np.array([1.0, 1.0, 0.5])  # w0, w1, the linear weight a
    g = tasks.gradients(x)[0]
    out = 0.5 * 6.0
    dl = 2.0 * (out - 2.0) * 0.5  # d loss / d conv output at the chosen position
    np.testing.assert_allclose(g[:2], [dl * 1.0, dl * 5.0], rtol=1e-15)
    np.testing.assert_allclose(
        g, nref.Net(ref_layers(net), "mse").gradient(x, X[0], Y[0]), rtol=1e-15
    )
    # Its second derivative is 0: the HVP is that of the network at the fixed argmax.
    v = np.array([0.3, -0.2, 0.7])
    np.testing.assert_allclose(
        tasks.hvps(x, v)[0], nref.Net(ref_layers(net), "mse").hvp(x, X[0], Y[0], v), rtol=1e-13
    )


def test_forward_matches_torch(rng):
    torch = extras.require("torch")
    for name in NETS:
        net = NETS[name]()
        shape = SHAPES.get(name, INPUT)
        X = rng.standard_normal((7, *shape))
        x = net.init_params(seed=5)
        tnet = net.to_torch()
        torch.nn.utils.vector_to_parameters(torch.from_numpy(x), tnet.parameters())
        with torch.no_grad():
            want = tnet(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(net.predict(x, X), want, rtol=1e-12, atol=1e-13)
        # The flat order is torch's parameters_to_vector.
        back = torch.nn.utils.parameters_to_vector(tnet.parameters()).detach().numpy()
        np.testing.assert_array_equal(back, x)
        assert [(n, tuple(p.shape)) for n, p in tnet.named_parameters()] == [
            (n, s) for n, s in net.parameter_shapes()
        ]


def test_init_params_follow_torchs_bounds():
    net = small_cnn()
    bounds = nref.fan_ins(ref_layers(net))
    x = net.init_params(seed=0)
    assert x.shape == (net.num_params,)
    assert np.all(np.abs(x) <= bounds)
    # Fills its range: each layer's largest magnitude is close to its bound.
    off = 0
    for _, shape in net.parameter_shapes():
        size = int(np.prod(shape))
        part, b = x[off : off + size], bounds[off]
        if size >= 20:
            assert np.abs(part).max() > 0.75 * b
        off += size
    np.testing.assert_array_equal(net.init_params(seed=0), x)
    assert not np.array_equal(net.init_params(seed=1), x)
    # An MLP net draws exactly what fm.mlp.init_params draws.
    layers = [3, 7, 5, 2]
    np.testing.assert_array_equal(
        fm.mlp.network(layers, "tanh").init_params(seed=4), fm.mlp.init_params(layers, seed=4)
    )


def test_unflatten_gives_named_views():
    net = small_cnn()
    x = net.init_params(seed=0)
    parts = net.unflatten(x)
    assert list(parts) == [name for name, _ in net.parameter_shapes()]
    assert parts["0.weight"].shape == (3, 2, 3)
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in parts.values()]), x)


# ----------------------------------------------------------------------------------------
# Derivatives
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("which", ["support", "query"])
def test_losses_gradients_hvps_match_reference(rng, name, loss, which):
    tasks, T, _, x = make(rng, name, loss)
    m, n = tasks.num_tasks, tasks.dim
    Phi = x + 0.3 * rng.standard_normal((m, n)) * np.abs(x).max()
    V = rng.standard_normal((m, n))
    q = which == "query"
    want_l = [t.f(p) if q else t.g(p) for t, p in zip(T, Phi)]
    want_g = [t.grad_f(p) if q else t.grad_g(p) for t, p in zip(T, Phi)]
    want_h = [t.hvp_f(p, v) if q else t.hvp_g(p, v) for t, p, v in zip(T, Phi, V)]
    np.testing.assert_allclose(tasks.losses(Phi, which), want_l, rtol=1e-12)
    assert mref.rel_err(tasks.gradients(Phi, which), want_g) < 1e-11
    assert mref.rel_err(tasks.hvps(Phi, V, which), want_h) < 1e-10


@pytest.mark.parametrize("name", ["cnn-tanh", "cnn-relu", "pool-first"])
def test_gradient_and_hvp_match_central_differences(rng, name):
    tasks, _, _, x = make(rng, name, "xent", m=2)
    h = 1e-6
    G = tasks.gradients(x)
    fd = np.stack(
        [mref.central_differences(lambda p, i=i: tasks.losses(p)[i], x, h) for i in range(2)]
    )
    assert mref.rel_err(G, fd) < 1e-6
    v = rng.standard_normal(x.size)
    H = tasks.hvps(x, v)
    fd_h = (tasks.gradients(x + h * v) - tasks.gradients(x - h * v)) / (2 * h)
    assert mref.rel_err(H, fd_h) < 1e-5


def test_hvp_is_symmetric(rng):
    tasks, _, _, x = make(rng, "cnn-tanh", "mse", m=1)
    u, v = rng.standard_normal(x.size), rng.standard_normal(x.size)
    uHv = u @ tasks.hvps(x, v)[0]
    vHu = v @ tasks.hvps(x, u)[0]
    assert abs(uHv - vHu) < 1e-11 * (abs(uHv) + 1e-300)


def test_an_mlp_net_gives_mlptasks_numbers(rng):
    layers = [4, 6, 5, 3]
    for act in ("relu", "tanh"):
        Xs, Xq = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 6, 4))
        Ys, Yq = rng.integers(0, 3, (3, 5)), rng.integers(0, 3, (3, 6))
        a = fm.MLPTasks(Xs, Ys, Xq, Yq, layers=layers, activation=act, loss="xent")
        net = nn.Sequential(
            nn.Linear(4, 6),
            getattr(nn, act.capitalize() if act == "tanh" else "ReLU")(),
            nn.Linear(6, 5),
            getattr(nn, act.capitalize() if act == "tanh" else "ReLU")(),
            nn.Linear(5, 3),
        )
        b = fm.NetTasks(Xs, Ys, Xq, Yq, net, loss="xent")
        x = fm.mlp.init_params(layers, seed=2)
        inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0, momentum=0.5)
        for est in (fm.MAML(inner), fm.FOBMAML(inner, scheme="symmetric")):
            np.testing.assert_array_equal(est.task_gradients(x, a), est.task_gradients(x, b))
        # ... and the MLP reference's numbers.
        T = mref.task_list(mref.Net(tuple(layers), act, "xent"), Xs, Ys, Xq, Yq)
        assert mref.rel_err(b.gradients(x, "query"), [t.grad_f(x) for t in T]) < 1e-12


# ----------------------------------------------------------------------------------------
# Estimators against the reference
# ----------------------------------------------------------------------------------------

VARIANTS = {
    "MAML": (lambda i: fm.MAML(i), lambda t, x, r: mref.maml(t, x, r)),
    "FOMAML": (lambda i: fm.FOMAML(i), lambda t, x, r: mref.fomaml(t, x, r)),
    "Reptile": (lambda i: fm.Reptile(i), lambda t, x, r: mref.reptile(t, x, r)),
    "IMAML": (lambda i: fm.IMAML(i, cg_steps=4), lambda t, x, r: mref.imaml(t, x, r, 4)),
    "HFMAML": (lambda i: fm.HFMAML(i, eps=1e-5), lambda t, x, r: mref.hfmaml(t, x, r, 1e-5)),
}
for _s in ("forward", "symmetric"):
    for _p in ("objective", "linear"):
        VARIANTS[f"FOBMAML-{_s}-{_p}"] = (
            lambda i, s=_s, p=_p: fm.FOBMAML(i, delta=1e-3, scheme=s, perturbation=p),
            lambda t, x, r, s=_s, p=_p: mref.fobmaml(t, x, r, 1e-3, s, p),
        )


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("beta", [0.0, 0.6])
@pytest.mark.parametrize("name", ["cnn-tanh", "cnn-relu"])
def test_estimator_matches_numpy_reference(rng, variant, beta, name):
    tasks, T, _, x = make(rng, name, "xent")
    inner = fm.InnerLoop(steps=4, lr=0.2, lam=1.5, momentum=beta)
    r = mref.Inner(4, 0.2, 1.5, beta)
    make_est, ref_fn = VARIANTS[variant]
    est = make_est(inner)
    G, g, losses, _ = est.estimate(x, tasks, losses=True)
    want = mref.per_task(ref_fn, T, x, r)
    tol = 1e-9 if variant.startswith(("FOBMAML", "HFMAML")) else 1e-11
    assert mref.rel_err(G, want) < tol
    np.testing.assert_allclose(g, G.mean(axis=0), rtol=1e-13, atol=1e-15)
    want_loss = [t.f(mref.adapt(t, x, r)) for t in T]
    np.testing.assert_allclose(losses, want_loss, rtol=1e-12)


def test_exact_matches_the_dense_reference_and_its_probe_runs(rng):
    tasks, T, _, x = make(rng, "cnn-tanh", "mse", m=2, scale=0.5)
    inner = fm.InnerLoop(steps=1, lr=0.2, lam=4.0)
    est = fm.Exact(inner, tol=1e-12, max_iter=20_000, pd_check_steps=20)
    r = mref.Inner(1, 0.2, 4.0)
    G = est.task_gradients(x, tasks)
    assert mref.rel_err(G, mref.per_task(mref.exact, T, x, r)) < 1e-7
    F, _ = est.value_and_gradient(x, tasks)
    assert abs(F - mref.exact_meta_loss(T, x, r)) < 1e-10 * abs(F)


def test_maml_matches_central_differences_of_the_meta_loss(rng):
    tasks, _, _, x = make(rng, "cnn-tanh", "mse", m=2)
    inner = fm.InnerLoop(steps=3, lr=0.2, lam=1.0, momentum=0.4)
    g = fm.MAML(inner).meta_gradient(x, tasks)
    fd = mref.central_differences(lambda p: fm.meta_loss_k(p, tasks, inner), x, 1e-6)
    assert mref.rel_err(g, fd) < 1e-6


def test_fobmaml_symmetric_approaches_exact_as_steps_grow(rng):
    tasks, _, _, x = make(rng, "cnn-tanh", "mse", m=2, scale=0.5)
    errs = []
    exact = fm.Exact(fm.InnerLoop(steps=1, lr=0.2, lam=4.0), tol=1e-12, max_iter=20_000)
    g_ref = exact.meta_gradient(x, tasks)
    for K in (5, 20, 80):
        inner = fm.InnerLoop(steps=K, lr=0.2, lam=4.0, momentum=0.3)
        g = fm.FOBMAML(inner, delta=1e-4, scheme="symmetric").meta_gradient(x, tasks)
        errs.append(np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6


# ----------------------------------------------------------------------------------------
# Threads, workspaces, the rest of the API
# ----------------------------------------------------------------------------------------

THREAD_ESTIMATORS = {
    "MAML": lambda i: fm.MAML(i),
    "FOBMAML-sym": lambda i: fm.FOBMAML(i, scheme="symmetric"),
    "FOBMAML-fwd-linear": lambda i: fm.FOBMAML(i, perturbation="linear"),
    "HFMAML": lambda i: fm.HFMAML(i),
    "IMAML": lambda i: fm.IMAML(i),
}


@pytest.mark.parametrize("est", list(THREAD_ESTIMATORS))
@pytest.mark.parametrize("m", [1, 2, 5])
def test_results_are_bit_identical_for_one_two_three_threads(rng, restore_threads, est, m):
    # m = 1 and m = 2 with 3 threads run one task at a time with the threads over the
    # columns of FO-B-MAML's and HF-MAML's blocks.
    tasks, _, _, x = make(rng, "cnn-relu", "xent", m=m)
    e = THREAD_ESTIMATORS[est](fm.InnerLoop(steps=3, lr=0.1, lam=1.0, momentum=0.3))
    out = []
    for k in (1, 2, 3):
        fm.set_num_threads(k)
        G, g, losses, _ = e.estimate(x, tasks, losses=True)
        out.append((G, g, losses))
    for other in out[1:]:
        for a, b in zip(out[0], other):
            assert np.array_equal(a, b)


def test_workspace_prediction_and_the_memory_cap(rng, restore_threads):
    tasks, _, _, x = make(rng, "cnn-tanh", "xent", m=4)
    fm.set_num_threads(1)
    n = tasks.dim
    maml = {
        K: fm.MAML(fm.InnerLoop(steps=K, lr=0.1, lam=1.0)).workspace_bytes(tasks) for K in (5, 10)
    }
    # MAML keeps the trajectory: K n doubles per thread, and nothing else grows with K.
    assert maml[10] - maml[5] == 5 * n * 8
    fob = {
        K: fm.FOBMAML(fm.InnerLoop(steps=K, lr=0.1, lam=1.0)).workspace_bytes(tasks)
        for K in (5, 500)
    }
    assert fob[5] == fob[500]
    est = fm.MAML(fm.InnerLoop(steps=10_000, lr=0.1, lam=1.0))
    need = est.workspace_bytes(tasks)
    before = fm.set_memory_limit(need - 1)
    try:
        with pytest.raises(MemoryError, match="MAML would allocate"):
            est.meta_gradient(x, tasks)
    finally:
        fm.set_memory_limit(before)


def test_adapt_meta_loss_evaluate_match_reference(rng):
    tasks, T, _, x = make(rng, "cnn-tanh", "xent")
    inner = fm.InnerLoop(steps=3, lr=0.2, lam=1.0, momentum=0.2)
    r = mref.Inner(3, 0.2, 1.0, 0.2)
    phi = fm.adapt(x, tasks, inner)
    assert mref.rel_err(phi, [mref.adapt(t, x, r) for t in T]) < 1e-12
    assert abs(fm.meta_loss_k(x, tasks, inner) - mref.meta_loss_k(T, x, r)) < 1e-12
    ev = fm.evaluate(x, tasks, inner)
    np.testing.assert_allclose(ev.task_accuracy, [t.query_accuracy(p) for t, p in zip(T, phi)])
    assert ev.accuracy_before == pytest.approx(np.mean([t.query_accuracy(x) for t in T]))


def test_sub_batches_and_same_query(rng):
    tasks, _, _, x = make(rng, "cnn-relu", "mse", m=4, sep=False)
    assert not tasks.separate_query and tasks.X_query is tasks.X_support
    est = fm.FOBMAML(fm.InnerLoop(steps=2, lr=0.1, lam=1.0), scheme="symmetric")
    G = est.task_gradients(x, tasks)
    sub = tasks[[3, 1]]
    assert isinstance(sub, fm.NetTasks) and sub.net == tasks.net
    np.testing.assert_array_equal(est.task_gradients(x, sub), G[[3, 1]])
    assert "NetTasks(m=4" in repr(tasks)


def test_meta_train_with_checkpoint_resumes_bit_identically(rng, tmp_path):
    import shutil

    tasks, _, _, x = make(rng, "cnn-tanh", "xent", m=3)
    est = fm.FOBMAML(fm.InnerLoop(steps=2, lr=0.1, lam=1.0), scheme="symmetric")
    path, copy = tmp_path / "run.ckpt", tmp_path / "copy.ckpt"

    def grab(t, x, record):
        if t == 3:  # before step 3: the file holds x_3
            shutil.copy(path, copy)

    kw = dict(progress=False, checkpoint_every=1)
    full = fm.meta_train(x, tasks, est, fm.Adam(1e-2), 6, checkpoint=str(path), callback=grab, **kw)
    resumed = fm.meta_train(
        x, tasks, est, fm.Adam(1e-2), 6, checkpoint=str(copy), resume=True, **kw
    )
    assert resumed.resumed_from == 3
    np.testing.assert_array_equal(resumed.x, full.x)
    np.testing.assert_array_equal(resumed.history["meta_loss"], full.history["meta_loss"])
    assert full.history["meta_loss"][-1] < full.history["meta_loss"][0]


def test_a_diverging_inner_loop_names_the_task_and_step(rng):
    tasks, _, _, x = make(rng, "cnn-tanh", "mse", m=3)
    est = fm.FOBMAML(fm.InnerLoop(steps=50, lr=1e6, lam=1.0), scheme="symmetric")
    with pytest.raises(FloatingPointError, match=r"FOBMAML: (diverged|non-finite).* task 0, step"):
        est.meta_gradient(x, tasks)
    st = est.estimate(x, tasks, errors="return").status
    assert not st.ok.any()


def test_mnist1d_fewshot_yields_conv_inputs():
    net = nn.Sequential(
        nn.Conv1d(1, 4, kernel_size=5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(4, 4, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(4 * 5, 5),
    )
    sampler = fm.datasets.mnist1d_fewshot(5, 2, 3, meta_batch=4, net=net, num_samples=2000)
    tasks = sampler(np.random.default_rng(0))
    assert isinstance(tasks, fm.NetTasks) and tasks.loss == "xent"
    assert tasks.X_support.shape == (4, 10, 1, 40) and tasks.X_query.shape == (4, 15, 1, 40)
    # The same episodes as the flat sampler, reshaped.
    flat = fm.datasets.mnist1d_fewshot(5, 2, 3, meta_batch=4, num_samples=2000)
    t2 = flat(np.random.default_rng(0))
    np.testing.assert_array_equal(tasks.X_support[:, :, 0, :], t2.X_support)
    np.testing.assert_array_equal(tasks.Y_query, t2.Y_query)
    params = sampler.get_params()
    assert params["net"] == net.get_config() and "layers" not in params
    rebuilt = fm.datasets.mnist1d_fewshot(**{k: v for k, v in params.items() if k != "name"})
    assert rebuilt == sampler and rebuilt.net == net
    np.testing.assert_array_equal(rebuilt(np.random.default_rng(0)).X_query, tasks.X_query)
    # An MLP given as a network gets flat inputs.
    mlp = fm.datasets.mnist1d_fewshot(
        5, 2, 3, meta_batch=4, num_samples=2000, net=fm.mlp.network([40, 8, 5])
    )
    assert mlp(np.random.default_rng(0)).X_support.shape == (4, 10, 40)


def test_mnist1d_fewshot_rejects_a_net_that_does_not_fit():
    with pytest.raises(ValueError, match=r"`net` must output n_way = 5 logits"):
        fm.datasets.mnist1d_fewshot(5, 2, 3, net=fm.mlp.network([40, 8, 4]), num_samples=2000)
    with pytest.raises(ValueError, match=r"`net` cannot take MNIST-1D samples of shape \(1, 40\)"):
        fm.datasets.mnist1d_fewshot(
            5,
            2,
            3,
            num_samples=2000,
            net=nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 38, 5)),
        )
    with pytest.raises(ValueError, match="give either `net` or `layers`"):
        fm.datasets.mnist1d_fewshot(5, 2, 3, layers=[40, 5], net=fm.mlp.network([40, 5]))
    with pytest.raises(TypeError, match="`net` must be a fobmaml.nn.Sequential"):
        fm.datasets.mnist1d_fewshot(5, 2, 3, net="cnn")


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def test_layers_that_do_not_chain_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) expects 7 input features.* 6"):
        nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(7, 2))
    with pytest.raises(ValueError, match=r"layer 2 \(Conv1d\) expects 5 input channels.* 4"):
        nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(5, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) needs a flat input"):
        nn.Sequential(nn.Conv1d(1, 4, 3), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer 1 \(Conv1d\) needs a signal input"):
        nn.Sequential(nn.Linear(4, 8), nn.Conv1d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match=r"output must be flat.*Flatten"):
        nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"layer 0 \(ReLU\) does not fix the input shape"):
        nn.Sequential(nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="at least one layer"):
        nn.Sequential()
    with pytest.raises(TypeError, match=r"layer 1 must be a fobmaml.nn layer"):
        nn.Sequential(nn.Linear(3, 2), "relu")


def test_input_shapes_that_do_not_fit_name_the_layer_and_argument(rng):
    net = small_cnn()
    with pytest.raises(
        ValueError,
        match=r"`X_support` has samples of shape \(3, 17\).*layer 0 "
        r"\(Conv1d\) expects 2 input channels",
    ):
        fm.NetTasks(
            rng.standard_normal((2, 4, 3, 17)), rng.integers(0, 3, (2, 4)), net=net, loss="xent"
        )
    with pytest.raises(
        ValueError,
        match=r"`X_support`.*layer 7 \(Linear\) expects 12 input "
        r"features",
    ):
        fm.NetTasks(
            rng.standard_normal((2, 4, 2, 40)), rng.integers(0, 3, (2, 4)), net=net, loss="xent"
        )
    with pytest.raises(ValueError, match=r"`X_support`.*layer 0 \(Conv1d\) needs a signal"):
        fm.NetTasks(
            rng.standard_normal((2, 4, 34)), rng.integers(0, 3, (2, 4)), net=net, loss="xent"
        )
    with pytest.raises(ValueError, match=r"`X_query` must have samples of shape \(2, 17\)"):
        fm.NetTasks(
            rng.standard_normal((2, 4, 2, 17)),
            rng.integers(0, 3, (2, 4)),
            rng.standard_normal((2, 4, 2, 18)),
            rng.integers(0, 3, (2, 4)),
            net=net,
            loss="xent",
        )
    deep = nn.Sequential(nn.Conv1d(2, 1, 3), nn.Conv1d(1, 1, 3), nn.Conv1d(1, 1, 3), nn.Flatten())
    with pytest.raises(
        ValueError,
        match=r"`X` has samples of shape \(2, 5\).*layer 2 \(Conv1d\)"
        r": kernel_size 3 is larger than the padded input length",
    ):
        deep.predict(np.zeros(deep.num_params), np.zeros((1, 2, 5)))
    with pytest.raises(ValueError, match=r"kernel_size 4 is larger than the input length 3"):
        nn.Sequential(nn.Conv1d(1, 1, 1), nn.MaxPool1d(4), nn.Flatten()).shapes((1, 3))
    with pytest.raises(ValueError, match=r"`X` must have shape"):
        net.predict(net.init_params(), np.zeros(17))
    with pytest.raises(ValueError, match=r"`params` must have 88 entries"):
        net.predict(np.zeros(5), np.zeros((1, 2, 17)))


@pytest.mark.parametrize(
    ("make_layer", "exc", "pattern"),
    [
        (lambda: nn.Conv1d(1, 2, 3, stride=0), ValueError, r"`stride` must be >= 1"),
        (lambda: nn.Conv1d(1, 2, 3, padding=-1), ValueError, r"`padding` must be >= 0"),
        (lambda: nn.Conv1d(1, 2, 0), ValueError, r"`kernel_size` must be >= 1"),
        (lambda: nn.Conv1d(1, 2, 3, stride=2, padding="same"), ValueError, "needs `stride` = 1"),
        (lambda: nn.Conv1d(1, 2, 3, padding="full"), ValueError, "`padding` must be one of"),
        (lambda: nn.Conv1d(1, 2, 3, dilation=2), ValueError, "`dilation` of Conv1d must be 1"),
        (lambda: nn.Conv1d(1, 2, 3, groups=2), ValueError, "`groups` of Conv1d must be 1"),
        (lambda: nn.Conv1d(0, 2, 3), ValueError, "`in_channels` must be >= 1"),
        (lambda: nn.Linear(3, 0), ValueError, "`out_features` must be >= 1"),
        (lambda: nn.Linear(3.0, 2), TypeError, "`in_features` must be an integer"),
        (lambda: nn.Linear(3, 2, bias=1), TypeError, "`bias` must be a bool"),
        (lambda: nn.MaxPool1d(2, stride=0), ValueError, r"`stride` must be >= 1"),
        (lambda: nn.MaxPool1d(2, padding=1), ValueError, "`padding` of MaxPool1d must be 0"),
        (lambda: nn.MaxPool1d(2, ceil_mode=True), ValueError, "`ceil_mode` of MaxPool1d"),
        (lambda: nn.AvgPool1d(0), ValueError, r"`kernel_size` must be >= 1"),
        (lambda: nn.Flatten(start_dim=0), ValueError, "`start_dim` of Flatten must be 1"),
    ],
)
def test_bad_layer_arguments_name_the_argument(make_layer, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make_layer()


def test_bad_task_arguments(rng):
    net = small_cnn()
    X = rng.standard_normal((2, 4, 2, 17))
    with pytest.raises(ValueError, match=r"`Y_support` labels must be in \[0, 3\)"):
        fm.NetTasks(X, np.full((2, 4), 3), net=net, loss="xent")
    with pytest.raises(ValueError, match=r"`Y_support` labels must be in \[0, 3\)"):
        fm.NetTasks(X, np.full((2, 4), -1), net=net, loss="xent")
    with pytest.raises(TypeError, match="must hold integer class labels"):
        fm.NetTasks(X, np.zeros((2, 4)), net=net, loss="xent")
    with pytest.raises(ValueError, match=r"`Y_support` must have shape \(2, 4, 3\)"):
        fm.NetTasks(X, np.zeros((2, 4, 2)), net=net, loss="mse")
    with pytest.raises(TypeError, match="`net` must be a fobmaml.nn.Sequential"):
        fm.NetTasks(X, np.zeros((2, 4), int), loss="xent")
    with pytest.raises(ValueError, match="`loss` must be one of"):
        fm.NetTasks(X, np.zeros((2, 4), int), net=net, loss="hinge")
    with pytest.raises(ValueError, match="`X_support` must contain only finite values"):
        fm.NetTasks(np.full_like(X, np.nan), np.zeros((2, 4), int), net=net, loss="xent")
    with pytest.raises(ValueError, match=r"`X_support` must have shape \(m, k, \*input_shape\)"):
        fm.NetTasks(X[0, 0], np.zeros((2, 4), int), net=net, loss="xent")
    with pytest.raises(ValueError, match="`X_support` must hold at least one sample"):
        fm.NetTasks(X[:, :0], np.zeros((2, 0), int), net=net, loss="xent")
