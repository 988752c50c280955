"""N-way K-shot classification episodes from MNIST-1D (Greydanus, 2020)."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .. import _validation as check
from .. import mlp as _mlp
from .. import nn as _nn
from ..tasks import MLPTasks, NetTasks
from ._common import Sampler, check_layers_io, check_rng

__all__ = ["mnist1d_fewshot", "MNIST1DFewShot", "TRAIN_CLASSES", "TEST_CLASSES"]

#: Input length of an MNIST-1D sample.
NUM_FEATURES = 40
#: Number of MNIST-1D classes (the digits 0-9).
NUM_CLASSES = 10
#: Original classes of the meta-training split with ``disjoint_classes=True``.
TRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
#: Original classes of the meta-test split with ``disjoint_classes=True``.
TEST_CLASSES = (6, 7, 8, 9)
_SPLITS = ("train", "test")


class _Data(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=8)
def _generate(num_samples: int, data_seed: int) -> _Data:
    """MNIST-1D generated in memory with ``mnist1d.data.make_dataset``, once per process.

    The arrays are read-only (they are shared by every sampler with the same
    ``(num_samples, data_seed)``). Nothing is downloaded or written to disk.
    ``make_dataset`` seeds the global ``random`` and ``numpy.random`` generators;
    their states are put back afterwards, so the caller's global randomness is
    untouched.
    """
    # Imported here: mnist1d pulls in scipy and takes seconds to import.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # a fresh object on every call
    args.num_samples = num_samples
    args.seed = data_seed
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    arrays = []
    for key, dtype in (
        ("x", np.float64),
        ("y", np.int64),
        ("x_test", np.float64),
        ("y_test", np.int64),
    ):
        arr = np.ascontiguousarray(raw[key], dtype=dtype)
        arr.setflags(write=False)
        arrays.append(arr)
    return _Data(*arrays)


class MNIST1DFewShot(Sampler):
    r"""Draws batches of MNIST-1D few-shot episodes; built by :func:`mnist1d_fewshot`.

    Calling the sampler, ``sampler(rng)``, returns an :class:`fobmaml.MLPTasks` of
    ``meta_batch`` episodes (a :class:`fobmaml.NetTasks` when built with a ``net``);
    :meth:`sample` also says where each sample came from.
    All randomness comes from the ``numpy.random.Generator`` passed in: equal
    generator states give identical batches.

    Attributes
    ----------
    n_way, k_shot, q_query, meta_batch, num_samples, data_seed : int
    split : {"train", "test"}
    layers : list of int, or None with a ``net``
    activation : str, or None with a ``net``
    net : fobmaml.nn.Sequential or None
    disjoint_classes : bool
    classes : tuple of int
        The original classes episodes are drawn from.
    X : numpy.ndarray, shape (N, 40), read-only
        The samples of the split (shared by all samplers with the same data).
    y : numpy.ndarray, shape (N,), read-only
        Their original classes, in 0..9.
    """

    def __init__(
        self,
        n_way: int,
        k_shot: int,
        q_query: int,
        split: str = "train",
        *,
        meta_batch: int = 16,
        layers: Sequence[int] | None = None,
        activation: str | None = None,
        net: _nn.Sequential | Sequence[dict] | None = None,
        disjoint_classes: bool = False,
        num_samples: int = 5000,
        data_seed: int = 0,
    ) -> None:
        self.n_way = check.integer(n_way, "n_way", minimum=2, maximum=NUM_CLASSES)
        self.k_shot = check.integer(k_shot, "k_shot", minimum=1)
        self.q_query = check.integer(q_query, "q_query", minimum=1)
        self.split = check.choice(split, "split", _SPLITS)
        self.meta_batch = check.integer(meta_batch, "meta_batch", minimum=1)
        self.net = None if net is None else _check_net(net, self.n_way)
        if self.net is not None:
            if layers is not None or activation is not None:
                raise ValueError(
                    "give either `net` or `layers`/`activation`, not both: a `net` fixes the model"
                )
            self.layers = self.activation = None
        else:
            if layers is None:
                layers = [NUM_FEATURES, 64, 64, self.n_way]
            self.layers = check_layers_io(
                layers, NUM_FEATURES, self.n_way, f"{self.n_way}-way MNIST-1D classification"
            )
            self.activation = check.choice(
                "relu" if activation is None else activation, "activation", _mlp.ACTIVATIONS
            )
        if not isinstance(disjoint_classes, (bool, np.bool_)):
            raise TypeError(
                f"`disjoint_classes` must be a bool (got {type(disjoint_classes).__name__})"
            )
        self.disjoint_classes = bool(disjoint_classes)
        self.num_samples = check.integer(num_samples, "num_samples", minimum=NUM_CLASSES)
        self.data_seed = check.integer(data_seed, "data_seed", minimum=0, maximum=2**32 - 1)

        if self.disjoint_classes:
            self.classes = TRAIN_CLASSES if self.split == "train" else TEST_CLASSES
            if self.n_way > len(self.classes):
                lo, hi = self.classes[0], self.classes[-1]
                raise ValueError(
                    f"`n_way` must be <= {len(self.classes)} for split={self.split!r} with "
                    f"disjoint_classes=True, which has only the classes {lo}-{hi} "
                    f"(got {self.n_way})"
                )
        else:
            self.classes = tuple(range(NUM_CLASSES))

        data = _generate(self.num_samples, self.data_seed)
        self.X, self.y = (data.x, data.y) if self.split == "train" else (data.x_test, data.y_test)
        self._by_class = {c: np.flatnonzero(self.y == c) for c in self.classes}
        need = self.k_shot + self.q_query
        counts = {c: idx.size for c, idx in self._by_class.items()}
        poorest = min(counts, key=counts.get)
        if counts[poorest] < need:
            raise ValueError(
                f"`k_shot` + `q_query` = {need} exceeds the {counts[poorest]} samples of class "
                f"{poorest} in the {self.split!r} split of MNIST-1D with "
                f"num_samples={self.num_samples}; lower `k_shot` or `q_query`, or raise "
                f"`num_samples`"
            )
        self._class_array = np.array(self.classes, dtype=np.int64)

    # -- sampling --------------------------------------------------------------------------
    def __call__(self, rng: np.random.Generator) -> MLPTasks | NetTasks:
        """A batch of ``meta_batch`` random episodes (see :meth:`sample`)."""
        return self.sample(rng)[0]

    def sample_episode(
        self, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The indices and labels of one random episode.

        Draws from `rng`, in this order: ``n_way`` distinct classes of :attr:`classes`
        in random order (label j is the j-th class drawn); for each of them,
        ``k_shot + q_query`` distinct samples of that class, the first ``k_shot`` for
        the support set and the rest for the query set; a random permutation of the
        support set; a random permutation of the query set.

        Returns
        -------
        classes : numpy.ndarray, shape (n_way,)
            ``classes[j]`` is the original class that has label j in this episode.
        support_index, query_index : numpy.ndarray, shapes (n_way k_shot,), (n_way q_query,)
            Rows of :attr:`X` (disjoint sets).
        support_labels, query_labels : numpy.ndarray of int64, same shapes
            The episode's labels, in ``0..n_way-1``.
        """
        rng = check_rng(rng)
        n, k, q = self.n_way, self.k_shot, self.q_query
        classes = rng.choice(self._class_array, size=n, replace=False)
        picks = [rng.choice(self._by_class[int(c)], size=k + q, replace=False) for c in classes]
        s_idx = np.concatenate([p[:k] for p in picks])
        q_idx = np.concatenate([p[k:] for p in picks])
        s_lab = np.repeat(np.arange(n, dtype=np.int64), k)
        q_lab = np.repeat(np.arange(n, dtype=np.int64), q)
        ps, pq = rng.permutation(n * k), rng.permutation(n * q)
        return classes, s_idx[ps], q_idx[pq], s_lab[ps], q_lab[pq]

    def sample(
        self, rng: np.random.Generator
    ) -> tuple[MLPTasks | NetTasks, np.ndarray, np.ndarray, np.ndarray]:
        """A batch of ``meta_batch`` episodes, and where their samples came from.

        The episodes are drawn one after the other with :meth:`sample_episode`.

        Returns
        -------
        tasks : MLPTasks or NetTasks
            ``X_support`` (m, n_way k_shot, 40), ``Y_support`` (m, n_way k_shot) int64,
            ``X_query`` (m, n_way q_query, 40), ``Y_query`` (m, n_way q_query) int64. With a
            ``net`` whose first layer is Conv1d, the inputs are (m, k, 1, 40): one channel.
        classes : numpy.ndarray, shape (m, n_way)
            ``classes[i, j]``: the original class of label j in episode i.
        support_index, query_index : numpy.ndarray, shapes (m, n_way k_shot), (m, n_way q_query)
            The rows of :attr:`X` in each support and query set.
        """
        rng = check_rng(rng)
        episodes = [self.sample_episode(rng) for _ in range(self.meta_batch)]
        classes, s_idx, q_idx, s_lab, q_lab = (np.stack(a) for a in zip(*episodes))
        if self.net is None:
            tasks = MLPTasks(
                self.X[s_idx],
                s_lab,
                self.X[q_idx],
                q_lab,
                layers=self.layers,
                activation=self.activation,
                loss="xent",
            )
        else:
            shape = self.input_shape
            Xs = self.X[s_idx].reshape((*s_idx.shape, *shape))
            Xq = self.X[q_idx].reshape((*q_idx.shape, *shape))
            tasks = NetTasks(Xs, s_lab, Xq, q_lab, net=self.net, loss="xent")
        return tasks, classes, s_idx, q_idx

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape in the batches: (1, 40) for a convolutional net, else (40,)."""
        conv = self.net is not None and self.net.input_shape[-1] is None
        return (1, NUM_FEATURES) if conv else (NUM_FEATURES,)

    # -- configuration ---------------------------------------------------------------------
    def get_params(self) -> dict:
        """``{"name": "mnist1d_fewshot", <argument>: value, ...}``, JSON-serialisable.

        Without ``"name"`` these are the keyword arguments of :func:`mnist1d_fewshot`
        that rebuild this sampler.
        """
        return {
            "name": "mnist1d_fewshot",
            "n_way": self.n_way,
            "k_shot": self.k_shot,
            "q_query": self.q_query,
            "split": self.split,
            "meta_batch": self.meta_batch,
            **(
                {"layers": list(self.layers), "activation": self.activation}
                if self.net is None
                else {"net": self.net.get_config()}
            ),
            "disjoint_classes": self.disjoint_classes,
            "num_samples": self.num_samples,
            "data_seed": self.data_seed,
        }

    def __repr__(self) -> str:
        return (
            f"MNIST1DFewShot(n_way={self.n_way}, k_shot={self.k_shot}, q_query={self.q_query}, "
            f"split={self.split!r}, meta_batch={self.meta_batch}, "
            + (
                f"layers={self.layers}, activation={self.activation!r}, "
                if self.net is None
                else f"net={self.net.get_config()!r}, "
            )
            + f"disjoint_classes={self.disjoint_classes}, "
            f"num_samples={self.num_samples}, data_seed={self.data_seed})"
        )


def mnist1d_fewshot(
    n_way: int,
    k_shot: int,
    q_query: int,
    split: str = "train",
    *,
    meta_batch: int = 16,
    layers: Sequence[int] | None = None,
    activation: str | None = None,
    net: _nn.Sequential | Sequence[dict] | None = None,
    disjoint_classes: bool = False,
    num_samples: int = 5000,
    data_seed: int = 0,
) -> MNIST1DFewShot:
    r"""A sampler of N-way K-shot classification episodes from MNIST-1D.

    MNIST-1D (Greydanus, 2020) has 10 classes of 1-D signals of length 40. The data
    are generated in memory by the ``mnist1d`` package (``make_dataset`` with
    ``num_samples`` and ``seed=data_seed``; nothing is downloaded or written to
    disk), once per process and ``(num_samples, data_seed)``; generation takes a
    few seconds. ``mnist1d`` splits them 80/20 into its train and test sets.

    Each episode (an :class:`fobmaml.MLPTasks` task with ``loss="xent"``):

    - draws ``n_way`` distinct classes in random order and relabels them
      ``0..n_way-1`` (the j-th class drawn gets label j, so the labels are a random
      permutation of the chosen classes, the same in support and query);
    - draws, for each chosen class, ``k_shot + q_query`` distinct samples: ``k_shot``
      for the support set and ``q_query`` for the query set (disjoint sets);
    - shuffles the support set and the query set (so they are not grouped by label).

    **Splits.** Meta-training and meta-testing use disjoint samples:
    ``split="train"`` draws from mnist1d's train set and ``split="test"`` from its
    test set. By default both use all 10 classes (disjoint samples, shared classes).
    With ``disjoint_classes=True`` they also use disjoint classes: 0-5 for
    ``"train"`` (:data:`TRAIN_CLASSES`) and 6-9 for ``"test"`` (:data:`TEST_CLASSES`),
    so ``n_way`` is at most 6 and 4 respectively.

    Parameters
    ----------
    n_way : int
        Classes per episode (2 <= n_way <= number of classes of the split).
    k_shot : int
        Support samples per class (>= 1).
    q_query : int
        Query samples per class (>= 1). Every class of the split must have at least
        ``k_shot + q_query`` samples.
    split : {"train", "test"}
    meta_batch : int
        Episodes per batch (>= 1).
    layers : sequence of int, optional
        ``[40, h_1, ..., n_way]``; default ``[40, 64, 64, n_way]``.
    activation : {"relu", "tanh"}, optional
        The MLP's hidden activation; default ``"relu"``.
    net : fobmaml.nn.Sequential, optional
        Any network instead of the MLP (or its ``get_config()`` list): the batches are then
        :class:`fobmaml.NetTasks`. A network that starts with Conv1d gets inputs shaped
        (m, k, 1, 40), one channel; one that starts with Linear gets (m, k, 40). Its output
        must have ``n_way`` entries.
    disjoint_classes : bool
        Give the two splits disjoint classes (see above).
    num_samples : int
        Size of the generated dataset, both splits together (>= 10); about
        ``num_samples / 10`` samples per class, 80% of them in the train split.
    data_seed : int
        Seed of the generation (mnist1d's own default, used for its published
        dataset, is 42).

    Returns
    -------
    MNIST1DFewShot
        Callable ``sampler(rng) -> MLPTasks`` with ``rng`` a
        ``numpy.random.Generator``; see also :meth:`MNIST1DFewShot.sample`.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> sampler = fm.datasets.mnist1d_fewshot(5, 1, 15, meta_batch=8)
    >>> tasks = sampler(np.random.default_rng(0))
    >>> tasks.X_support.shape, tasks.Y_support.shape, tasks.X_query.shape
    ((8, 5, 40), (8, 5), (8, 75, 40))
    >>> cnn = fm.nn.Sequential(fm.nn.Conv1d(1, 8, 5, stride=2, padding=1), fm.nn.ReLU(),
    ...                        fm.nn.Flatten(), fm.nn.Linear(8 * 19, 5))
    >>> fm.datasets.mnist1d_fewshot(5, 1, 15, meta_batch=8, net=cnn)(
    ...     np.random.default_rng(0)).X_support.shape
    (8, 5, 1, 40)
    """
    return MNIST1DFewShot(
        n_way,
        k_shot,
        q_query,
        split,
        meta_batch=meta_batch,
        layers=layers,
        activation=activation,
        net=net,
        disjoint_classes=disjoint_classes,
        num_samples=num_samples,
        data_seed=data_seed,
    )


def _check_net(net: object, n_way: int) -> _nn.Sequential:
    """`net` (or its config list) as a network that maps one MNIST-1D sample to n_way logits."""
    if isinstance(net, (list, tuple)):
        net = _nn.Sequential.from_config(net)
    if not isinstance(net, _nn.Sequential):
        raise TypeError(f"`net` must be a fobmaml.nn.Sequential (got {type(net).__name__})")
    shape = (NUM_FEATURES,) if net.input_shape[-1] is not None else (1, NUM_FEATURES)
    try:
        out = net.output_shape(shape)
    except ValueError as err:
        raise ValueError(f"`net` cannot take MNIST-1D samples of shape {shape}: {err}") from None
    if out != (n_way,):
        raise ValueError(
            f"`net` must output n_way = {n_way} logits per sample (its output shape is {out})"
        )
    return net
