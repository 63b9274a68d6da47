"""Parcel classifiers (cropchain.models.parcel): shapes, parameter budgets, temporal ratios, behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropchain.errors import ConfigError
from cropchain.models import count_parameters
from cropchain.models.parcel import available_parcel_models, get_parcel_model
from cropchain.models.parcel._layers import conv_output_size, masked_band_stats

torch.set_num_threads(1)

NAMES = [
    "parcel_cnn",
    "parcel_cnn_gru70",
    "parcel_cnn_gru80",
    "parcel_cnn_gru90",
    "parcel_convlstm",
    "parcel_gru",
]
# exact parameter counts for 10 bands and 8 classes (T31TEJ), default budget 90,000
EXPECTED = {
    "parcel_cnn": (91_374, {"width": 30}),
    "parcel_gru": (89_769, {"hidden": 135}),
    "parcel_cnn_gru70": (89_450, {"width": 19, "hidden": 73}),
    "parcel_cnn_gru80": (88_314, {"width": 15, "hidden": 87}),
    "parcel_cnn_gru90": (86_698, {"width": 10, "hidden": 104}),
    "parcel_convlstm": (89_592, {"hidden": 41, "pool": 2}),
}


def _batch(b=3, t=5, c=10, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, s, s)
    mask[:, 4:28, 6:30] = 1.0
    x = torch.randn(b, t, c, s, s, generator=g) * mask[:, None, None]
    return x, mask


def test_registry_lists_the_paper_models():
    assert available_parcel_models() == sorted(NAMES + ["parcel_pse_ltae"])


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_parameter_budget(name):
    model = get_parcel_model(name, n_bands=10, n_classes=8)
    n, sizes = EXPECTED[name]
    assert count_parameters(model) == n
    assert abs(n - 90_000) / 90_000 < 0.05  # "about 90k parameters each"
    assert {k: model.hyperparameters[k] for k in sizes} == sizes
    x, mask = _batch()
    model.eval()
    with torch.no_grad():
        out = model(x, mask)
    assert out.shape == (3, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name, ratio", [("parcel_cnn_gru70", 0.7), ("parcel_cnn_gru80", 0.8), ("parcel_cnn_gru90", 0.9)]
)
def test_hybrid_temporal_parameter_ratio(name, ratio):
    model = get_parcel_model(name, n_bands=10, n_classes=8)
    spatial, temporal = model.spatial_parameters(), model.temporal_parameters()
    # ratio = GRU / (CNN + GRU); the head 128-64 counts in neither
    assert spatial > 0 and temporal > 0
    assert model.temporal_ratio() == pytest.approx(temporal / (spatial + temporal))
    assert abs(model.temporal_ratio() - ratio) < 0.005
    head = count_parameters(model.head)
    assert spatial + temporal + head == count_parameters(model)


def test_budget_follows_bands_classes_and_n_params():
    small = get_parcel_model("parcel_cnn_gru80", n_bands=4, n_classes=3, n_params=20_000)
    assert abs(count_parameters(small) - 20_000) / 20_000 < 0.1
    assert abs(small.temporal_ratio() - 0.8) < 0.02
    explicit = get_parcel_model("parcel_gru", n_bands=10, n_classes=8, hidden=16)
    assert explicit.hyperparameters["hidden"] == 16
    # the resolved sizes rebuild the same network (how a saved model is reloaded)
    again = get_parcel_model("parcel_cnn_gru80", n_bands=4, n_classes=3, **small.hyperparameters)
    assert count_parameters(again) == count_parameters(small)


def test_cnn_architecture_follows_the_paper():
    model = get_parcel_model("parcel_cnn", n_bands=10, n_classes=8)
    convs = [m for m in model.spatial.net if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.spatial.net) == 3
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.spatial.net) == 3
    assert conv_output_size(32) == 2  # 32 -> 30 -> 15 -> 13 -> 6 -> 4 -> 2
    linears = [m for m in model.head.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128, 64, 8]


def test_cnn_ignores_date_order_gru_does_not():
    x, mask = _batch(t=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.manual_seed(0)
    cnn = get_parcel_model("parcel_cnn", n_bands=10, n_classes=8, n_params=20_000).eval()
    gru = get_parcel_model("parcel_gru", n_bands=10, n_classes=8, n_params=20_000).eval()
    with torch.no_grad():
        assert torch.allclose(cnn(x, mask), cnn(x[:, perm], mask), atol=1e-5)  # maximum over dates
        assert not torch.allclose(gru(x, mask), gru(x[:, perm], mask), atol=1e-4)


def test_gru_sees_only_the_parcel():
    x, mask = _batch()
    noisy = x + 5.0 * (1 - mask)[:, None, None]  # change every pixel outside the parcel
    torch.manual_seed(0)
    gru = get_parcel_model("parcel_gru", n_bands=10, n_classes=8, n_params=20_000).eval()
    with torch.no_grad():
        assert torch.allclose(gru(x, mask), gru(noisy, mask), atol=1e-5)
        assert not torch.allclose(gru(x, mask), gru(x * 2, mask), atol=1e-4)


def test_convlstm_pooling_averages_parcel_pixels_only():
    # a parcel of constant values: 2x2 pooling of the parcel pixels keeps the constant at the
    # parcel border (no dilution by the zeros outside), so pool=2 equals pool=1 on a constant field
    # of the pooled size
    torch.manual_seed(0)
    lstm = get_parcel_model("parcel_convlstm", n_bands=2, n_classes=3, hidden=4, pool=2).eval()
    mask = torch.zeros(1, 32, 32)
    mask[0, 1:31, 1:31] = 1.0  # border blocks are half parcel, half outside
    x = torch.ones(1, 3, 2, 32, 32) * mask[:, None, None]
    full = torch.ones(1, 3, 2, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lstm(x, mask), lstm(full, torch.ones(1, 32, 32)), atol=1e-6)


def test_masked_band_stats_match_numpy():
    x, mask = _batch(b=2, t=3, c=4)
    stats = masked_band_stats(x, mask).numpy()
    xn, mn = x.numpy(), mask.numpy().astype(bool)
    inside = xn[..., mn[0]]  # same mask for both samples: [B, T, C, n]
    assert stats.shape == (2, 3, 8)
    np.testing.assert_allclose(stats[..., :4], inside.mean(-1), atol=1e-5)
    np.testing.assert_allclose(stats[..., 4:], inside.std(-1), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model(name):
    x, mask = _batch(b=2, t=3, c=4)
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        model = get_parcel_model(name, n_bands=4, n_classes=3, n_params=10_000).eval()
        with torch.no_grad():
            outs.append(model(x, mask))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_bad_names_and_hyperparameters():
    with pytest.raises(ConfigError, match="unknown parcel model"):
        get_parcel_model("parcel_transformer", n_bands=10, n_classes=8)
    with pytest.raises(ConfigError, match="hiden"):
        get_parcel_model("parcel_gru", n_bands=10, n_classes=8, hiden=12)
    with pytest.raises(ConfigError, match="pool"):
        get_parcel_model("parcel_convlstm", n_bands=10, n_classes=8, pool=3)
    with pytest.raises(ConfigError, match="too small"):
        get_parcel_model("parcel_cnn", n_bands=10, n_classes=8, patch_size=16)
    with pytest.raises(ConfigError, match="temporal_ratio"):
        get_parcel_model("parcel_cnn_gru70", n_bands=10, n_classes=8, temporal_ratio=0.9)


# ---------------------------------------------------------- PSE+L-TAE (Sainte Fare Garnot et al., CVPR 2020)


def test_pse_ltae_shapes_and_parameter_count():
    model = get_parcel_model("parcel_pse_ltae", n_bands=10, n_classes=8)
    pse = (
        (10 * 32 + 32 + 2 * 32) + (32 * 64 + 64 + 2 * 64) + (128 * 128 + 128 + 2 * 128)
    )  # MLP 32-64, mean+std, Linear 128 + BN
    ltae = (
        (2 * 128 + 128 * 256 + 256 + 2 * 256)
        + (256 * 128 + 128)
        + 16 * 8
        + (256 * 128 + 128 + 2 * 128)
        + 2 * 128
    )
    decoder = (128 * 64 + 64) + (64 * 32 + 32) + (32 * 8 + 8)
    assert (model.spatial_parameters(), model.temporal_parameters(), count_parameters(model.head)) == (
        pse,
        ltae,
        decoder,
    )
    assert count_parameters(model) == pse + ltae + decoder == 130_248
    x, mask = _batch(t=7)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            out = model(x, mask)
        assert out.shape == (3, 8) and torch.isfinite(out).all()
    with torch.no_grad():
        assert model.encode(x, mask).shape == (3, 128)


def test_pixel_sets_are_drawn_inside_the_parcel():
    from cropchain.models.parcel.pse_ltae import draw_pixel_sets

    torch.manual_seed(0)
    b, t, c, s = 2, 3, 2, 16
    x = torch.arange(b * t * c * s * s, dtype=torch.float32).view(b, t, c, s, s)  # every value unique
    mask = torch.zeros(b, s, s)
    mask[0, 2:12, 3:13] = 1  # 100 px
    mask[1, 5:7, 5:8] = 1  # 6 px: fewer than the set
    pixels, set_mask = draw_pixel_sets(x, mask, 64)
    assert pixels.shape == (b, t, 64, c) and set_mask.shape == (b, 64)
    assert set_mask[0].all() and int(set_mask[1].sum()) == 6
    flat = x.view(b, t, c, -1)
    for i in range(b):
        inside = set(flat[i, 0, 0, mask[i].view(-1) > 0].tolist())
        drawn = pixels[i, 0, set_mask[i] > 0, 0].tolist()
        assert set(drawn) <= inside and len(set(drawn)) == len(
            drawn
        )  # inside the parcel, without replacement
        assert torch.equal(
            pixels[i, :, :, 1] - pixels[i, :, :, 0], torch.full((t, 64), float(s * s))
        )  # bands of one pixel
    again, _ = draw_pixel_sets(x, mask, 64)
    assert not torch.equal(again[0], pixels[0])  # a new draw each time


def test_pse_ltae_is_a_set_model_of_ordered_dates():
    """Evaluation uses every parcel pixel: the pixels outside do not count, nor their arrangement
    inside the parcel; the order of the dates does."""
    torch.manual_seed(0)
    model = get_parcel_model("parcel_pse_ltae", n_bands=10, n_classes=8, d_model=64, n_head=8).eval()
    x, mask = _batch(t=6)
    with torch.no_grad():
        ref = model(x, mask)
        assert torch.allclose(model(x + 5.0 * (1 - mask)[:, None, None], mask), ref, atol=1e-5)
        g = torch.Generator().manual_seed(1)
        perm = torch.randperm(32 * 32, generator=g)  # shuffle pixel positions (mask with them)
        shuffled = x.flatten(-2)[..., perm].view_as(x)
        assert torch.allclose(model(shuffled, mask.flatten(-2)[..., perm].view_as(mask)), ref, atol=1e-5)
        assert not torch.allclose(model(x[:, [3, 0, 5, 1, 4, 2]], mask), ref, atol=1e-4)
        assert torch.equal(model(x, mask), ref)  # evaluation is deterministic


def test_pse_ltae_training_draws_depend_on_the_seed():
    model = get_parcel_model("parcel_pse_ltae", n_bands=10, n_classes=8, dropout=0.0).train()
    x, mask = _batch()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model(x, mask))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_pse_ltae_hyperparameters():
    model = get_parcel_model(
        "parcel_pse_ltae", n_bands=4, n_classes=3, n_pixels=32, d_model=64, n_head=8, d_k=4, day_step=5
    )
    assert model.hyperparameters == {
        "n_pixels": 32,
        "day_step": 5.0,
        "d_model": 64,
        "n_head": 8,
        "d_k": 4,
        "dropout": 0.2,
    }
    again = get_parcel_model("parcel_pse_ltae", n_bands=4, n_classes=3, **model.hyperparameters)
    assert count_parameters(again) == count_parameters(model)
    with pytest.raises(ConfigError, match="parcels.models.parcel_pse_ltae: .*multiple of n_head"):
        get_parcel_model("parcel_pse_ltae", n_bands=4, n_classes=3, d_model=60, n_head=8)
    with pytest.raises(ConfigError, match="n_pixels"):
        get_parcel_model("parcel_pse_ltae", n_bands=4, n_classes=3, n_pixels=1)
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        get_parcel_model("parcel_pse_ltae", n_bands=4, n_classes=3, n_params=90_000)
