"""Training of the networks: sparse loss, reproducibility, learning on a synthetic tile, saved outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import rasterio.features
import torch
from test_patches import parcel_layout, write_tile

from cropchain.errors import ConfigError, InputError
from cropchain.learning.patches import IGNORE_INDEX
from cropchain.learning.train import load_model, train_model
from cropchain.learning.train_network import drop_dates, masked_cross_entropy, train_network
from cropchain.mapping.classify import classify_tile
from cropchain.nomenclature import Nomenclature

NOMENCLATURE = Nomenclature(
    codes=(2, 5, 9), names=("wheat", "maize", "vineyard"), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3))
)
# small and quick: the point is the loop, not the score
TINY = {
    "fg_unet": {
        "widths": [8, 16],
        "mlp": [16],
        "epochs": 6,
        "patches_per_epoch": 16,
        "batch_size": 4,
        "patch_size": 32,
    },
    "tempcnn": {
        "filters": 8,
        "dense": 16,
        "epochs": 6,
        "patches_per_epoch": 16,
        "batch_size": 4,
        "patch_size": 16,
    },
    "ltae": {
        "d_model": 32,
        "n_head": 4,
        "d_k": 4,
        "mlp": [32, 16],
        "decoder": [16],
        "epochs": 6,
        "patches_per_epoch": 16,
        "batch_size": 4,
        "patch_size": 16,
    },
}


@pytest.fixture(autouse=True, scope="module")
def one_thread(torch_one_thread):
    """Every test of this module runs PyTorch on one thread (conftest)."""


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    polygons = parcel_layout()
    return polygons, write_tile(tmp_path_factory.mktemp("tile"), polygons)


def train(tile, out, arch="tempcnn", seed=0, **extra):
    _, (f, v, s) = tile
    return train_network(
        [f], [v], [s], arch, {**TINY[arch], **extra}, out, seed=seed, threads=1, tiles=["T31TXA"]
    )


def test_loss_ignores_unlabelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :, :5] = IGNORE_INDEX  # validation polygons, roads, held-out polygons...
    weight = torch.tensor([0.5, 1.0, 4.0])
    loss = masked_cross_entropy(logits, target, weight)
    loss.backward()
    assert (logits.grad[:, :, :, :5] == 0).all() and (logits.grad[:, :, :, 5:] != 0).any()
    other = logits.detach().clone()
    other[:, :, :, :5] = torch.randn(2, 3, 8, 5) * 10  # whatever the network says there
    assert torch.equal(masked_cross_entropy(other, target, weight), loss.detach())
    labelled = target != IGNORE_INDEX
    nll = -torch.log_softmax(logits.detach(), 1).gather(1, target.clamp(min=0)[:, None])[:, 0]
    w = weight[target.clamp(min=0)]
    assert torch.allclose(loss.detach(), (w * nll)[labelled].sum() / w[labelled].sum())


def test_training_outputs_and_reload(tile, tmp_path):
    polygons, (f, v, s) = tile
    train(tile, tmp_path / "m")
    out = tmp_path / "m"
    for name in ("model.pt", "model.json", "metrics.json", "training_curves.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".scratch-*"))  # the patch cache is removed
    saved = json.loads((out / "model.json").read_text())
    assert saved["architecture"] == "tempcnn" and saved["kind"] == "network" and saved["classes"] == [2, 5, 9]
    assert (
        saved["hyperparameters"]["epochs"] == 6
        and saved["seed"] == 0
        and len(saved["normalization"]["mean"]) == 16
    )
    learn_ids = set(polygons.loc[polygons["split"] == "learn", "polygon_id"])
    held = set(saved["holdout_polygons"]["T31TXA"])
    assert held and held <= learn_ids  # early stopping on learning polygons, never on validation ones
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == len(metrics["curves"]["train_loss"]) <= 6
    assert metrics["best_epoch"] in metrics["curves"]["epoch"] and metrics["training_time_s"] > 0
    model = load_model(out)
    block = rasterio.open(f).read()
    assert model.predict_proba_image(block).shape == (3, 96, 96)


def test_same_seed_same_weights(tile, tmp_path):
    for arch in ("tempcnn", "fg_unet"):
        extra = {"epochs": 2, "patches_per_epoch": 8}
        train(tile, tmp_path / f"{arch}a", arch, seed=3, **extra)
        train(tile, tmp_path / f"{arch}b", arch, seed=3, **extra)
        train(tile, tmp_path / f"{arch}c", arch, seed=4, **extra)
        a, b, c = (
            torch.load(tmp_path / f"{arch}{k}" / "model.pt", weights_only=True)["state_dict"] for k in "abc"
        )
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("arch", ["tempcnn", "fg_unet", "ltae"])
def test_tiny_training_learns_the_parcels(tile, tmp_path, arch):
    polygons, (f, v, s) = tile
    train(tile, tmp_path / "m", arch, seed=1, epochs=12, patience=12)
    model = load_model(tmp_path / "m", threads=1)
    classify_tile(
        f,
        v,
        model,
        NOMENCLATURE,
        tmp_path / "map.tif",
        tmp_path / "conf.tif",
        window=32,
        overlap=-(-model.margin // model.alignment) * model.alignment,
    )
    with rasterio.open(tmp_path / "map.tif") as src:
        predicted = src.read(1)
    val = polygons[polygons["split"] == "validation"]
    truth = rasterio.features.rasterize(
        zip(val.geometry, val["code"]),
        out_shape=predicted.shape,
        transform=rasterio.open(f).transform,
        fill=0,
    )
    scored = (truth > 0) & (predicted > 0)
    accuracy = (predicted[scored] == truth[scored]).mean()
    assert accuracy > 0.8  # two classes of validation parcels: chance is about 0.5


def test_errors(tile, tmp_path):
    _, (f, v, s) = tile
    with pytest.raises(
        ConfigError, match="classify.overlap: 8 px is smaller than the receptive margin of fg_unet"
    ):
        train_network(
            [f],
            [v],
            [s],
            "fg_unet",
            TINY["fg_unet"],
            tmp_path / "a",
            seed=0,
            classify_window=512,
            classify_overlap=8,
        )
    assert not (tmp_path / "a" / "model.pt").exists()
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        train_network([f], [v], [s], "tempcnn", {"epoch": 2}, tmp_path / "b", seed=0)
    with pytest.raises(ConfigError, match="not a network"):
        train_network([f], [v], [s], "rf", {}, tmp_path / "c", seed=0)
    with pytest.raises(ConfigError, match="trained on patches"):
        train_model(tmp_path / "pixels.parquet", "tempcnn", {}, tmp_path / "d", seed=0)
    with pytest.raises(InputError, match="split polygons not found"):
        train_network([f], [v], [tmp_path / "none.gpkg"], "tempcnn", TINY["tempcnn"], tmp_path / "e", seed=0)


def test_date_dropout_drops_whole_dates_and_keeps_one():
    """Each dropped date loses all its channels (wherever the layout puts them), the other dates
    are untouched, about `rate` of the dates go, and no patch loses every date."""
    import numpy as np

    from cropchain.models.networks import feature_layout

    dates, channels = ["20210105", "20210115", "20210125", "20210204", "20210214"], ["B04", "B08", "NDVI"]
    names = [f"{d}_{c}" for c in channels for d in dates]  # channel-major, as FeatureRaster names them
    layout = feature_layout(names)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(names), 4, 4)).astype(np.float32) + 5  # no zero by chance
    before = x.copy()
    out = drop_dates(x, layout.order, layout.n_dates, 0.4, np.random.default_rng(1))
    assert out is x
    cells = layout.order.reshape(layout.n_dates, len(channels))  # [date, channel] -> feature index
    zeroed = (x[:, cells] == 0).all(axis=(3, 4))  # [n, T, C]
    kept = (x[:, cells] == before[:, cells]).all(axis=(3, 4))
    assert (zeroed.all(axis=2) | kept.all(axis=2)).all()  # a date goes whole or not at all
    dropped = zeroed.all(axis=2)
    assert 0.35 < dropped.mean() < 0.45 and not dropped.all(axis=1).any()
    for t, d in enumerate(dates):  # the layout's date t is the date of those feature names
        assert {names[i][:8] for i in cells[t]} == {d}
    again = drop_dates(before.copy(), layout.order, layout.n_dates, 0.4, np.random.default_rng(1))
    np.testing.assert_array_equal(again, x)  # seeded
    nearly_all = drop_dates(before.copy(), layout.order, layout.n_dates, 0.999, np.random.default_rng(2))
    assert ((nearly_all[:, cells] != 0).all(axis=(2, 3, 4)).sum(axis=1) == 1).all()


def test_date_dropout_trains_and_is_refused_where_there_are_no_dates(tile, tmp_path):
    meta = train(tile, tmp_path / "ltae", "ltae", seed=1, epochs=2, date_dropout=0.3)
    assert meta["hyperparameters"]["date_dropout"] == 0.3
    a = torch.load(tmp_path / "ltae" / "model.pt", weights_only=True)["state_dict"]
    train(tile, tmp_path / "plain", "ltae", seed=1, epochs=2)
    b = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # the dropout acted
    with pytest.raises(ConfigError, match=r"fg_unet: unknown hyper-parameter\(s\) \['date_dropout'\]"):
        train(tile, tmp_path / "fg", "fg_unet", seed=1, epochs=1, date_dropout=0.3)


@pytest.mark.parametrize("arch", ["tempcnn", "fg_unet"])
def test_seed_ensemble_holds_the_lone_network_and_averages_probabilities(tile, tmp_path, arch):
    _, (f, v, s) = tile
    extra = {"epochs": 2, "patches_per_epoch": 8}
    train(tile, tmp_path / "one", arch, seed=3, **extra)
    train(tile, tmp_path / "three", arch, seed=3, ensemble=3, **extra)
    one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)["state_dict"]
    three = torch.load(tmp_path / "three" / "model.pt", weights_only=True)["state_dict"]
    # member 0 trains exactly as the network without `ensemble`; the others differ from it
    assert all(torch.equal(one[k], three[f"members.0.{k}"]) for k in one)
    for i in (1, 2):
        assert not all(
            torch.equal(one[k], three[f"members.{i}.{k}"]) for k in one if one[k].is_floating_point()
        )
    metrics = json.loads((tmp_path / "three" / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [3, 1003, 2003]
    assert 0 <= metrics["ensemble_holdout_macro_f1"] <= 1
    # the ensemble's probabilities are the mean of its members'
    ensemble = load_model(tmp_path / "three")
    block = rasterio.open(f).read()
    p = ensemble.predict_proba_image(block)
    members = [m.eval() for m in ensemble.net.members]
    singles = []
    for m in members:
        ensemble.net, saved = m, ensemble.net
        singles.append(ensemble.predict_proba_image(block))
        ensemble.net = saved
    assert p.shape == (3, 96, 96)
    np.testing.assert_allclose(p, np.mean(singles, axis=0), atol=1e-5)
    total = p.sum(axis=0)
    valid = total > 0  # a pixel-wise network gives 0 where every feature is nodata
    assert valid.mean() > 0.5 and np.allclose(total[valid], 1, atol=1e-5)
    assert ensemble.margin == load_model(tmp_path / "one").margin


def test_ensemble_must_be_a_whole_number(tile, tmp_path):
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match=r"tempcnn\.ensemble: .* is not a whole number >= 1"):
            train(tile, tmp_path / "m", "tempcnn", epochs=1, ensemble=bad)
