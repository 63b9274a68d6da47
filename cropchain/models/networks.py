"""Convolutional networks as cropchain models: shared blocks, feature layout, the model wrapper.

A network of :mod:`cropchain.models` (``fg_unet``, ``temporal_unet``, ``dilated_cnn``,
``tempcnn``) is a :class:`NetworkClassifier`: a PyTorch module (built by the
architecture's file from the number of features, of classes and the temporal layout of
the features) plus everything it needs to predict a tile's features: the class codes,
the feature names, the normalization statistics of the learning set and the
hyper-parameters. It follows the model protocol of :mod:`cropchain.models`:

- ``classes_`` (nomenclature codes ``[K]``), ``feature_names`` (``F`` band descriptions);
- ``predict_proba_image(block)``: float32 ``[F, H, W]`` features (reflectance 0-1 and
  indices, nodata -9999) -> float32 ``[K, H, W]`` class probabilities;
- ``margin``: receptive-field half-width in px (the overlap tiled inference needs for a
  seamless map) and ``alignment``: the px multiple window offsets must keep (``2**depth``
  for a U-Net with ``depth`` poolings, so that pooling grids of a window and of the whole
  tile coincide);
- pixel-wise networks (``margin == 0``: TempCNN) also have ``predict_proba(X [N, F])``.

With the ``ensemble`` hyper-parameter (n > 1) the module is a :class:`SeedEnsemble` of n
networks of the architecture whose class probabilities are averaged; everything above holds
for it unchanged.

Inputs are standardized per channel: the mean and standard deviation of a band or index
are pooled over its dates (the features ``YYYYMMDD_<channel>``), so that a time series
keeps its shape; nodata (-9999) becomes 0, the mean of the learning set.

Training is in :mod:`cropchain.learning.train_network`; this module only builds, runs, saves and
reloads networks.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import cropchain
from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.models import count_parameters

log = logging.getLogger(__name__)

#: nodata of the features (:data:`cropchain.series.features.FEATURES_NODATA`)
FEATURES_NODATA = -9999.0
#: file of the weights, normalization and metadata of a saved network
WEIGHTS_FILE = "model.pt"
#: format tag of :data:`WEIGHTS_FILE`
FORMAT = "cropchain-network/1"
#: pixels per strip of a pixel-wise network's image prediction
STRIP_PIXELS = 8192

#: Training hyper-parameters shared by every network (:mod:`cropchain.learning.train_network`);
#: an architecture file may override them (``TRAIN_DEFAULTS``).
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 30,  # maximum number of epochs
    "patches_per_epoch": 128,  # patches drawn per epoch
    "batch_size": 8,  # patches per optimizer step
    "patch_size": 64,  # side of the training patches (px)
    "learning_rate": 1e-3,  # Adam
    "weight_decay": 1e-4,  # Adam's L2 penalty
    "patience": 8,  # epochs without a better held-out score before stopping
    "monitor": "loss",  # held-out score of early stopping: loss, macro_f1 or overall_accuracy
    "holdout_fraction": 0.15,  # fraction of each class's learning polygons held out for early stopping
    # loss weight of a class = frequency ** -power (0: unweighted, 1: inverse frequency)
    "class_weight_power": 0.5,
    "augment": True,  # random flips and 90-degree rotations of the patches
    "ema_decay": 0.0,  # exponential moving average of the weights, per step (0: none)
    # networks trained from different seeds whose class probabilities are averaged (1: one network)
    "ensemble": 1,
    # training and inference: a CUDA GPU when PyTorch sees one, else the CPU (or cpu, cuda, cuda:N)
    "device": "auto",
}

_DATED = re.compile(r"^(\d{8})_(.+)$")


@dataclass(frozen=True)
class TemporalLayout:
    """Where each (date, channel) of a time series sits among the features.

    ``order`` holds ``T * C`` feature indices, date-major: ``features[order]`` reshaped to
    ``[T, C, ...]`` is the series of every channel (band or index) in date order.
    """

    dates: tuple[str, ...]
    channels: tuple[str, ...]
    order: np.ndarray  # int64 [T * C]

    @property
    def n_dates(self) -> int:
        return len(self.dates)

    @property
    def n_channels(self) -> int:
        return len(self.channels)


def feature_layout(feature_names: Sequence[str]) -> TemporalLayout:
    """Temporal layout of features named ``YYYYMMDD_<channel>`` (the band descriptions of
    the features: ``20180123_B02`` ... then ``20180123_NDVI`` ...).

    Parameters
    ----------
    feature_names : the ``F`` feature names, in band order.

    Returns
    -------
    TemporalLayout
        dates sorted, channels in order of first appearance, ``order`` such that
        ``features[order].reshape(T, C, ...)`` is ``[date, channel]``.

    Raises
    ------
    InputError
        a name that is not ``YYYYMMDD_<channel>``, or a channel missing at some date.
    """
    cells: dict[tuple[str, str], int] = {}
    channels: list[str] = []
    for i, name in enumerate(feature_names):
        m = _DATED.match(name)
        if not m:
            raise InputError(
                "features",
                f"feature {name!r} is not named YYYYMMDD_<band or index>",
                "use the features computed by cropchain.series.features (a temporal network needs dated "
                "features)",
            )
        date, channel = m.groups()
        cells[(date, channel)] = i
        if channel not in channels:
            channels.append(channel)
    dates = sorted({d for d, _ in cells})
    missing = [f"{d}_{c}" for d in dates for c in channels if (d, c) not in cells]
    if missing:
        raise InputError(
            "features",
            f"{len(missing)} (date, channel) feature(s) missing, e.g. {missing[:3]}",
            "a temporal network needs every band and index at every date",
        )
    order = np.array([cells[(d, c)] for d in dates for c in channels], dtype=np.int64)
    return TemporalLayout(tuple(dates), tuple(channels), order)


def channel_groups(feature_names: Sequence[str]) -> np.ndarray:
    """Group index ``[F]`` of each feature: features sharing a channel name (the part after
    ``YYYYMMDD_``) share a group; a feature without date prefix is its own group."""
    keys: dict[str, int] = {}
    out = np.empty(len(feature_names), dtype=np.int64)
    for i, name in enumerate(feature_names):
        m = _DATED.match(name)
        key = m.group(2) if m else f"\0{name}"
        out[i] = keys.setdefault(key, len(keys))
    return out


# --------------------------------------------------------------------------------------
# shared blocks
# --------------------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """``kernel`` x ``kernel`` convolution ('same' zero padding, optional dilation), batch
    normalization, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def pixel_mlp(cin: int, widths: Sequence[int], dropout: float) -> nn.Sequential:
    """Pixel-wise multilayer perceptron as 1x1 convolutions (+ batch normalization, ReLU, dropout)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        cin = w
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) with 'same' padding.

    ``len(widths) - 1`` levels of 2x2 max pooling; at each level ``convs`` 3x3
    convolutions (batch normalization, ReLU, dropout after the first); nearest
    upsampling and concatenation with the skip connection on the way up.
    ``forward``: float32 ``[B, in_channels, H, W]`` with ``H``, ``W`` multiples of
    :attr:`alignment` -> ``[B, widths[0], H, W]``.
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int] = (32, 64, 128), convs: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if len(widths) < 2 or convs < 1:
            raise ConfigError(f"U-Net: widths {list(widths)} need >= 2 levels and convs_per_level >= 1")
        self.alignment = 2 ** (len(widths) - 1)

        def level(cin: int, cout: int) -> nn.Sequential:
            layers: list[nn.Module] = [conv_bn_relu(cin, cout)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [conv_bn_relu(cout, cout) for _ in range(convs - 1)]
            return nn.Sequential(*layers)

        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(level(cin, w))
            cin = w
        self.up = nn.ModuleList(
            level(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return x


def attach_layout(net: nn.Module, layout: TemporalLayout, chunk_pixels: int) -> None:
    """Give a pixel-series network what :func:`pixel_series` and :func:`by_chunks` need: the
    date-major ``order`` (a buffer, not saved), ``n_dates``, ``n_channels`` and ``chunk_pixels``
    (pixels per chunk in evaluation)."""
    net.register_buffer("order", torch.as_tensor(layout.order), persistent=False)
    net.n_dates, net.n_channels = layout.n_dates, layout.n_channels
    net.chunk_pixels = int(chunk_pixels)


def by_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` applied to ``x`` ``[P, ...]`` by chunks of ``chunk`` rows (pixels), the results
    concatenated along the first dimension: the evaluation of pixel-wise encoders with a
    bounded memory."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def pixel_series(x: torch.Tensor, order: torch.Tensor, n_dates: int, n_channels: int) -> torch.Tensor:
    """Features ``[B, F, H, W]`` -> each pixel's series ``[B*H*W, C, 1, T]`` (channels-last
    memory order, ready for :class:`TemporalConvs`), pixels in row-major order."""
    b, _, h, w = x.shape
    s = x.index_select(1, order).view(b, n_dates, n_channels, h, w)
    s = s.permute(0, 3, 4, 2, 1).reshape(b * h * w, n_channels, 1, n_dates)
    return s.contiguous(memory_format=torch.channels_last)


class TemporalConvs(nn.Module):
    """1D convolutions along time of each pixel's series, then flattened.

    ``forward``: ``[P, C, 1, T]`` (from :func:`pixel_series`) -> ``[P, filters[-1] * T]``
    (filter-major, as ``nn.Flatten`` of ``[P, filters, T]``). Each layer: convolution of
    kernel ``kernel`` ('same' zero padding), batch normalization, ReLU, dropout. The
    convolutions are ``(1, kernel)`` 2D convolutions in channels-last order and, in
    evaluation, batch normalization is folded into them: the fastest CPU path of
    PyTorch for these shapes.
    """

    def __init__(self, n_channels: int, filters: Sequence[int], kernel: int, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel % 2 != 1 or not filters:
            raise ValueError(f"temporal kernel ({kernel}) must be odd and filters {list(filters)} non-empty")
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        cin = n_channels
        for f in filters:
            self.convs.append(nn.Conv2d(cin, f, (1, kernel), padding=(0, kernel // 2)))
            self.bns.append(nn.BatchNorm2d(f))
            cin = f
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def folded(self) -> list[nn.Conv2d]:
        """The convolutions with batch normalization folded in (evaluation only)."""
        return [
            fuse_conv_bn_eval(c, b).to(memory_format=torch.channels_last)
            for c, b in zip(self.convs, self.bns)
        ]

    def forward(
        self, s: torch.Tensor, folded: list[nn.Conv2d] | None = None, *, time_major: bool = False
    ) -> torch.Tensor:
        """``folded``: :meth:`folded`, computed once by a caller that runs many chunks (evaluation).
        ``time_major``: flatten ``[P, T * filters]`` date-major instead, a view of the
        channels-last output (no copy; see :func:`time_major_linear`)."""
        if self.training:
            for conv, bn in zip(self.convs, self.bns):
                s = self.dropout(torch.relu(bn(conv(s))))
        else:
            for conv in folded if folded is not None else self.folded():
                s = torch.relu_(conv(s))
        if time_major:
            return s.permute(0, 2, 3, 1).reshape(s.shape[0], -1)
        return s.contiguous().reshape(s.shape[0], -1)


class _OneDNNLinear(nn.Module):
    """A linear layer computed by oneDNN's inner product (``aten::mkldnn_linear``)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_mkldnn()
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features)
        self.bias = bias.to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.mkldnn_linear(x.contiguous().to_mkldnn(), self.weight, self.bias).to_dense()


def inference_linear(linear: nn.Linear) -> nn.Module:
    """``linear`` for inference through oneDNN's inner product where PyTorch has oneDNN:
    about twice the speed of the MKL GEMM behind ``nn.Linear`` on the AVX-512 CPUs
    measured here; dense float32 ``[N, in]`` in, ``[N, out]`` out, the same function. On a GPU
    ``linear`` itself."""
    if not torch.backends.mkldnn.is_available() or linear.weight.device.type != "cpu":
        return linear
    return _OneDNNLinear(linear)


def time_major_linear(linear: nn.Linear, n_filters: int, n_dates: int) -> nn.Linear:
    """A copy of ``linear`` (inputs flattened filter-major, ``[filters, T]``) taking inputs
    flattened date-major (``[T, filters]``), the same function."""
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(
            linear.weight.view(-1, n_filters, n_dates).transpose(1, 2).reshape(linear.out_features, -1)
        )
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def receptive_margin(net: nn.Module, n_features: int, alignment: int = 1, *, bound: int = 32) -> int:
    """Receptive-field half-width of a fully convolutional network, in px, found by probing.

    A copy of ``net`` with every weight positive (convolution and linear weights
    ``1 / fan-in``, batch normalization as identity, biases 0, float64, eval mode) maps a
    one-pixel impulse to a non-zero output exactly on the pixels the impulse can
    influence (no cancellation is possible), including through zero padding and
    pooling. Impulses at every offset modulo ``alignment`` are probed; the result is the
    largest row or column distance between an impulse and an output it reaches. A
    window read with at least this overlap (and aligned offsets) is predicted exactly as
    in the whole image.

    Parameters
    ----------
    net : module mapping ``[B, n_features, S, S]`` to ``[B, K, S, S]`` logits (``S`` a
        multiple of ``alignment``).
    n_features : input channels.
    alignment : pooling grid of the network (``2**depth``).
    bound : first probing half-size; doubled until the support fits.
    """
    probe = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        while True:
            size = -(-(2 * bound + 2 * alignment) // alignment) * alignment
            centre = size // 2 // alignment * alignment
            x = torch.zeros(alignment, n_features, size, size, dtype=torch.float64)
            for o in range(alignment):
                x[o, :, centre + o, centre + o] = 1.0
            reached = (probe(x) != 0).any(dim=1)  # [A, S, S]
            margin = 0
            for o in range(alignment):
                rows, cols = torch.nonzero(reached[o], as_tuple=True)
                if rows.numel():
                    margin = max(
                        margin, int((rows - centre - o).abs().max()), int((cols - centre - o).abs().max())
                    )
            if margin < centre - alignment:  # the support did not reach the probe's border
                return margin
            bound *= 2


# --------------------------------------------------------------------------------------
# seed ensembles
# --------------------------------------------------------------------------------------
#: member ``i`` of an ensemble is initialised and trained with seed ``seed + MEMBER_SEED_STEP * i``
MEMBER_SEED_STEP = 1000


def member_seeds(seed: int, n_members: int) -> list[int]:
    """The seeds of the ``n_members`` networks of a seed ensemble trained for run seed ``seed``:
    ``seed + 1000 * i``; member 0 has the run's seed, so it is the network trained without
    ``ensemble``."""
    return [int(seed) + MEMBER_SEED_STEP * i for i in range(int(n_members))]


class SeedEnsemble(nn.Module):
    """Networks of one architecture trained from different seeds, their class probabilities
    averaged (a deep ensemble: Lakshminarayanan et al., NeurIPS 2017, "Simple and Scalable
    Predictive Uncertainty Estimation using Deep Ensembles").

    ``forward`` maps ``[B, F, H, W]`` to ``log(mean_i softmax(member_i(x)))`` ``[B, K, H, W]``,
    so that the softmax of the output is the members' mean probability and every caller of a
    single network (tiled inference, the receptive margin of member 0) is unchanged. The
    members' attributes (``alignment``, ``pixelwise``, ``n_dates``, ``n_channels``) are those
    of member 0 (each member keeps its own ``order``); the members are trained one after the other
    (:func:`cropchain.learning.train_network.train_network`).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("a seed ensemble needs at least 2 members")
        self.members = nn.ModuleList(members)
        first = members[0]
        for key in ("alignment", "pixelwise", "n_dates", "n_channels"):
            if hasattr(first, key):
                setattr(self, key, getattr(first, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - float(np.log(len(self.members)))


def ensemble_members(net: nn.Module) -> list[nn.Module]:
    """The networks to train in ``net``: the members of a :class:`SeedEnsemble`, else ``[net]``."""
    return list(net.members) if isinstance(net, SeedEnsemble) else [net]


# --------------------------------------------------------------------------------------
# the model wrapper
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """An architecture file's entry in the registry.

    ``net``: ``net(n_features, n_classes, layout, **arch_hyperparameters) -> nn.Module``
    whose ``forward`` maps ``[B, F, H, W]`` to logits ``[B, K, H, W]``; the module has
    ``alignment`` (int) and ``pixelwise`` (bool) attributes, and ``needs_layout`` when it
    reshapes the features into dates x channels.
    """

    name: str
    net: Callable[..., nn.Module]
    defaults: dict[str, Any]  # architecture hyper-parameters
    train_defaults: dict[str, Any]  # overrides of TRAINING_DEFAULTS
    needs_layout: bool = False


class NetworkClassifier:
    """A CNN with the cropchain model protocol (see the module docstring).

    Built untrained by :func:`cropchain.models.get_model`; :meth:`initialize` creates the
    module once the features, classes and normalization are known
    (:func:`cropchain.learning.train_network.train_network` does it), :meth:`save` /
    :meth:`load` write and read ``model.pt``.

    Attributes
    ----------
    architecture : registry name.
    hyperparameters : every hyper-parameter (architecture and training), defaults filled.
    classes_ : int64 ``[K]`` nomenclature codes, in the order of the outputs.
    feature_names : ``F`` feature names (:func:`cropchain.series.features.feature_names`).
    mean, std : float32 ``[F]`` standardization of each feature (pooled per channel).
    net : the ``torch.nn.Module``.
    margin, alignment : see the module docstring.
    """

    def __init__(
        self, arch: Architecture, *, seed: int = 0, threads: int = 1, **hyperparameters: Any
    ) -> None:
        known = {**TRAINING_DEFAULTS, **arch.train_defaults, **arch.defaults}
        unknown = sorted(set(hyperparameters) - set(known))
        if unknown:
            raise ConfigError(
                f"architectures.{arch.name}: unknown hyper-parameter(s) {unknown}; "
                f"known: {', '.join(sorted(known))}"
            )
        self.arch = arch
        self.architecture = arch.name
        self.hyperparameters: dict[str, Any] = {**known, **hyperparameters}
        self.seed = int(seed)
        self.threads = int(threads)
        self.classes_ = np.empty(0, dtype=np.int64)
        self.feature_names: list[str] = []
        self.mean = np.empty(0, dtype=np.float32)
        self.std = np.empty(0, dtype=np.float32)
        self.net: nn.Module | None = None
        self.margin = 0
        self.alignment = 1
        self.pixelwise = False
        self.device = torch.device("cpu")  # where the module is (to_device)

    # --- hyper-parameters -------------------------------------------------------------
    @property
    def architecture_hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters passed to the module constructor."""
        return {k: self.hyperparameters[k] for k in self.arch.defaults}

    @property
    def training_hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters of the training loop."""
        return {k: v for k, v in self.hyperparameters.items() if k not in self.arch.defaults}

    # --- construction -----------------------------------------------------------------
    def build_net(
        self, n_features: int, n_classes: int, feature_names: Sequence[str] | None = None
    ) -> nn.Module:
        """A freshly initialised module (seeded with ``seed``) for ``n_features`` inputs; with
        ``ensemble`` = n > 1, a :class:`SeedEnsemble` of n modules seeded with
        :func:`member_seeds`.

        Raises
        ------
        ConfigError
            invalid hyper-parameters, ``ensemble`` not a whole number >= 1.
        InputError
            features that are not a dates x channels grid for an architecture that needs one.
        """
        layout = feature_layout(feature_names) if self.arch.needs_layout else None
        if layout is not None and len(layout.order) != n_features:
            raise InputError(
                "features",
                f"{n_features} features but {len(layout.order)} (date, channel) cells",
                "rerun the features step",
            )
        n_members = self.hyperparameters["ensemble"]
        if not isinstance(n_members, int) or isinstance(n_members, bool) or n_members < 1:
            raise ConfigError(
                f"architectures.{self.architecture}.ensemble: {n_members!r} is not a whole number >= 1"
            )
        members, rng_after_first = [], None
        for seed in member_seeds(self.seed, n_members):
            torch.manual_seed(seed)
            try:
                members.append(
                    self.arch.net(n_features, n_classes, layout, **self.architecture_hyperparameters)
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"architectures.{self.architecture}: invalid hyper-parameters ({exc})"
                ) from None
            if rng_after_first is None:
                rng_after_first = torch.get_rng_state()
        if n_members == 1:
            return members[0]
        # PyTorch's generator as after building member 0 alone: member 0 trains as a lone network
        torch.set_rng_state(rng_after_first)
        return SeedEnsemble(members)

    def initialize(
        self,
        feature_names: Sequence[str],
        classes: Sequence[int],
        mean: np.ndarray,
        std: np.ndarray,
        *,
        margin: int | None = None,
    ) -> None:
        """Create the module for these features and classes, with this standardization.

        ``margin`` (px) is probed with :func:`receptive_margin` unless given (a saved model
        carries it).
        """
        self.feature_names = list(feature_names)
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        n = len(self.feature_names)
        if self.mean.shape != (n,) or self.std.shape != (n,) or not (self.std > 0).all():
            raise ValueError(f"normalization must be [F={n}] with std > 0")
        self.net = self.build_net(n, len(self.classes_), self.feature_names)
        self.alignment = int(getattr(self.net, "alignment", 1))
        self.pixelwise = bool(getattr(self.net, "pixelwise", False))
        if margin is None:  # members share the architecture, hence the margin
            probe = ensemble_members(self.net)[0]
            margin = 0 if self.pixelwise else receptive_margin(probe, n, self.alignment)
        self.margin = int(margin)
        self.set_threads(self.threads)

    def set_threads(self, threads: int) -> None:
        """CPU threads of PyTorch (``torch.set_num_threads``; process-wide)."""
        self.threads = int(threads)
        torch.set_num_threads(max(1, self.threads))

    def to_device(self, device: str | torch.device | None = None) -> NetworkClassifier:
        """Move the module to ``device`` (default: the ``device`` hyper-parameter; ``auto``: a
        CUDA GPU when PyTorch sees one, else the CPU); inference inputs follow it and outputs
        come back as NumPy arrays. Raises ConfigError for a GPU asked for where there is none."""
        from cropchain.models.device import resolve_device

        self.device = resolve_device(self.hyperparameters.get("device", "auto") if device is None else device)
        self._module().to(self.device)
        return self

    @property
    def n_parameters(self) -> int:
        return count_parameters(self._module())

    def _module(self) -> nn.Module:
        if self.net is None:
            raise RuntimeError(f"{self.architecture}: network not initialized (train it or load a saved one)")
        return self.net

    # --- prediction -------------------------------------------------------------------
    def normalize(
        self, block: np.ndarray, *, return_nodata: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Standardize float32 ``[F, ...]`` features; nodata (-9999) and NaN become 0.

        With ``return_nodata``, also the bool ``[F, ...]`` mask of the nodata values.
        """
        block = np.asarray(block, dtype=np.float32)
        if block.shape[0] != len(self.mean):
            raise InputError(
                "features",
                f"{block.shape[0]} feature bands, the network expects {len(self.mean)}",
                "classify with features computed with the configuration of the training",
            )
        shape = (-1,) + (1,) * (block.ndim - 1)
        out = block - self.mean.reshape(shape)
        out *= (1.0 / self.std).astype(np.float32).reshape(shape)
        nodata = block == FEATURES_NODATA
        nodata |= np.isnan(block)
        np.copyto(out, 0.0, where=nodata)
        return (out, nodata) if return_nodata else out

    def predict_proba_image(self, block: np.ndarray) -> np.ndarray:
        """Class probabilities of every pixel of an image block.

        Parameters
        ----------
        block : float32 ``[F, H, W]`` features (band order = ``feature_names``; reflectance
            0-1 and indices; nodata -9999).

        Returns
        -------
        np.ndarray
            float32 ``[K, H, W]`` softmax probabilities, classes in the order of ``classes_``.
            A spatial network sees the block zero-padded on the right and bottom to a
            multiple of ``alignment`` (then cropped), as the whole tile is. A pixel-wise
            network predicts only the pixels with data (probability 0 for every class at
            pixels whose features are all nodata).
        """
        net = self._module().eval()
        if self.pixelwise:
            return self._predict_pixels(net, np.asarray(block, dtype=np.float32))
        x = self.normalize(block)
        f, h, w = x.shape
        xt = torch.from_numpy(x)[None].to(self.device)
        a = self.alignment
        ph, pw = (-h) % a, (-w) % a
        if ph or pw:
            xt = F.pad(xt, (0, pw, 0, ph))
        with torch.inference_mode():
            proba = torch.softmax(net(xt), dim=1)[0, :, :h, :w]
        return np.ascontiguousarray(proba.float().cpu().numpy(), dtype=np.float32)

    def _predict_pixels(self, net: nn.Module, block: np.ndarray) -> np.ndarray:
        """Pixel-wise network over ``[F, H, W]``, by strips of rows of about
        :data:`STRIP_PIXELS` pixels (small temporaries: no page faults, cache-friendly);
        pixels whose features are all nodata get probability 0."""
        f, h, w = block.shape
        proba = np.zeros((len(self.classes_), h, w), dtype=np.float32)
        rows = max(1, STRIP_PIXELS // max(w, 1))
        with torch.inference_mode():
            for r0 in range(0, h, rows):
                x, nodata = self.normalize(block[:, r0 : r0 + rows], return_nodata=True)
                valid = ~nodata.all(axis=0)  # [rows, W]
                if not valid.any():
                    continue
                pixels = x.reshape(f, -1)  # [F, n]: an image of 1 x n pixels
                if not valid.all():
                    pixels = np.ascontiguousarray(pixels[:, valid.reshape(-1)])
                logits = net(torch.from_numpy(pixels)[None, :, None, :].to(self.device))[0, :, 0, :]
                strip = proba[:, r0 : r0 + rows]
                strip[:, valid] = torch.softmax(logits, dim=0).float().cpu().numpy()
        return proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Pixel-wise networks only: float32 ``[N, F]`` features -> float32 ``[N, K]``.

        Raises
        ------
        TypeError
            the network looks at neighbours (``margin > 0``): use :meth:`predict_proba_image`.
        """
        if not self.pixelwise:
            raise TypeError(
                f"{self.architecture} is not pixel-wise (margin {self.margin} px): use predict_proba_image"
            )
        net = self._module().eval()
        x = torch.from_numpy(self.normalize(np.asarray(X, dtype=np.float32).T)).to(self.device)  # [F, N]
        with torch.inference_mode():
            proba = torch.softmax(net(x[None, :, None, :]), dim=1)[0, :, 0, :].T
        return np.ascontiguousarray(proba.float().cpu().numpy(), dtype=np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class codes ``[N]`` of pixel features ``[N, F]`` (pixel-wise networks)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # --- persistence ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What :meth:`load` needs: architecture, hyper-parameters, seed, classes, feature
        names, normalization, margin and the weights (tensors and plain Python only, so that
        ``torch.load(weights_only=True)`` reads it)."""
        return {
            "format": FORMAT,
            "architecture": self.architecture,
            "hyperparameters": self.hyperparameters,
            "seed": self.seed,
            "classes": [int(c) for c in self.classes_],
            "feature_names": list(self.feature_names),
            "mean": torch.from_numpy(self.mean.copy()),
            "std": torch.from_numpy(self.std.copy()),
            "margin": self.margin,
            "alignment": self.alignment,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self._module().state_dict().items()},
        }

    def save(self, out_dir: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write ``model.pt`` (atomically) and, when ``meta`` is given, ``model.json``."""
        out_dir = Path(out_dir)
        path = out_dir / WEIGHTS_FILE
        with atomic_output(path) as tmp:
            torch.save(self.state(), tmp)
        if meta is not None:
            write_text_atomic(out_dir / "model.json", json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(
        cls, model_dir: str | os.PathLike, *, threads: int = 1, device: str | None = None
    ) -> NetworkClassifier:
        """Reload a network written by :meth:`save`, on ``device`` (default: its ``device``
        hyper-parameter, ``auto`` for models saved without one; see :meth:`to_device`).

        Raises
        ------
        InputError
            missing, unreadable or foreign ``model.pt``.
        """
        from cropchain.models import get_model

        path = Path(model_dir) / WEIGHTS_FILE
        if not path.exists():
            raise InputError(
                path, "network weights not found", "run the training step for this architecture and run"
            )
        state = load_torch_file(path, "retrain the model")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(
                path,
                "not a cropchain network (format "
                f"{state.get('format') if isinstance(state, dict) else '?'!r})",
                "retrain the model with this version of cropchain",
            )
        model = get_model(
            state["architecture"], seed=state["seed"], threads=threads, **state["hyperparameters"]
        )
        model.initialize(
            state["feature_names"],
            state["classes"],
            state["mean"].numpy(),
            state["std"].numpy(),
            margin=state["margin"],
        )
        model._module().load_state_dict(state["state_dict"])
        model._module().eval()
        return model.to_device(device)


def load_torch_file(path: Path, fix: str) -> Any:
    """The object saved in PyTorch file ``path``, on the CPU (``torch.load(weights_only=True)``).

    Raises
    ------
    InputError
        unreadable file (truncated or foreign), with ``fix`` as the remedy.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise InputError(path, f"not a readable PyTorch file ({type(exc).__name__}: {exc})", fix) from None


def library_versions() -> dict[str, str]:
    """Versions of the libraries a network depends on."""
    return {"numpy": np.__version__, "torch": torch.__version__, "cropchain": cropchain.__version__}
