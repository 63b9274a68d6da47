"""Network architectures: shapes, sizes, receptive margins, seamless tiled inference, save / reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cropchain.config import load_schema
from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import geotiff_profile
from cropchain.learning.train import load_model
from cropchain.mapping.classify import classify_tile, model_image_predictor
from cropchain.models import available, count_parameters, get_model, is_network, kind
from cropchain.models.networks import (
    TRAINING_DEFAULTS,
    feature_layout,
    receptive_margin,
)
from cropchain.nomenclature import Nomenclature

NETWORKS = ["fg_unet", "temporal_unet", "dilated_cnn", "tempcnn", "ltae"]
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
T31TEJ_DATES = [f"2018{m:02d}{d:02d}" for m in range(2, 11) for d in (1, 11, 21)][:26]
# features.tif of T31TEJ: 26 dates x 10 bands, then NDVI, NDWI, brightness x 26 dates = 338
T31TEJ_NAMES = [f"{d}_{b}" for d in T31TEJ_DATES for b in BANDS] + [
    f"{d}_{i}" for i in ("NDVI", "NDWI", "brightness") for d in T31TEJ_DATES
]
SMALL_NAMES = [f"{d}_{b}" for d in T31TEJ_DATES[:3] for b in ("B04", "B08", "B11")] + [
    f"{d}_NDVI" for d in T31TEJ_DATES[:3]
]
CODES = (3, 7, 12, 20)
NOMENCLATURE = Nomenclature(
    codes=CODES, names=("a", "b", "c", "d"), colors=((1, 2, 3), (4, 5, 6), (7, 8, 9), (9, 9, 9))
)


@pytest.fixture(autouse=True, scope="module")
def one_thread(torch_one_thread):
    """Every test of this module runs PyTorch on one thread (conftest)."""


def initialized(arch: str, names: list[str], seed: int = 0, **hp):
    """An untrained network whose batch normalization statistics are those of random inputs
    and whose classifier weights are scaled up, so that its map varies from pixel to pixel
    (a fresh initialisation predicts nearly one class everywhere)."""
    model = get_model(arch, seed=seed, threads=1, **hp)
    rng = np.random.default_rng(seed)
    model.initialize(names, CODES, rng.normal(0.2, 0.05, len(names)), rng.uniform(0.05, 0.2, len(names)))
    net = model.net
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        net(torch.randn(2, len(names), 32, 32, generator=torch.Generator().manual_seed(seed)))
        last = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
        last.weight.mul_(5.0)
    for bn in bns:
        bn.momentum = 0.1
    net.eval()
    return model


def test_registry():
    assert set(NETWORKS) <= set(available())
    assert all(is_network(a) for a in NETWORKS) and kind("rf") == "pixel" and not is_network("xgboost")
    with pytest.raises(ConfigError, match="unknown architecture"):
        kind("resnet")
    with pytest.raises(ConfigError, match=r"architectures.tempcnn: unknown hyper-parameter\(s\) \['epoch'\]"):
        get_model("tempcnn", epoch=3)


@pytest.mark.parametrize("arch", NETWORKS)
def test_schema_documents_every_hyperparameter(arch):
    model = get_model(arch)
    schema = load_schema()["properties"]["architectures"]["properties"][arch]
    assert set(schema["properties"]) == set(model.hyperparameters)  # architecture keys + TRAINING_DEFAULTS
    assert set(TRAINING_DEFAULTS) <= set(schema["properties"])


def test_feature_layout():
    layout = feature_layout(T31TEJ_NAMES)
    assert layout.n_dates == 26 and layout.channels == tuple(BANDS + ["NDVI", "NDWI", "brightness"])
    grid = np.asarray(T31TEJ_NAMES)[layout.order].reshape(26, 13)
    assert grid[0, 0] == f"{T31TEJ_DATES[0]}_B02" and grid[5, 11] == f"{T31TEJ_DATES[5]}_NDWI"
    with pytest.raises(InputError, match="YYYYMMDD"):
        feature_layout(["B02_mean"])
    with pytest.raises(InputError, match="missing"):
        feature_layout(T31TEJ_NAMES[:-1])


@pytest.mark.parametrize("arch", NETWORKS)
def test_forward_shapes_and_sizes(arch):
    model = initialized(arch, T31TEJ_NAMES)
    net = model.net.eval()
    x = torch.randn(2, len(T31TEJ_NAMES), 16, 20)
    with torch.no_grad():
        assert net(x).shape == (2, len(CODES), 16, 20)
    n = count_parameters(net)
    if arch == "fg_unet":
        assert 450_000 < n < 650_000  # about 0.5 M with T31TEJ's 338 features (the paper: 526 k)
        assert model.margin == 23 and model.alignment == 4
    elif arch == "tempcnn":  # 3 convolutions of 64 filters, kernel 5, on 13 channels x 26 dates; dense 256
        conv = (13 * 5 * 64 + 64) + 2 * (64 * 5 * 64 + 64) + 3 * 2 * 64
        dense = 64 * 26 * 256 + 256 + 2 * 256 + 256 * len(CODES) + len(CODES)
        assert n == conv + dense
        assert model.margin == 0 and model.pixelwise
    elif arch == "ltae":  # 13 channels -> d_model 256, 16 heads of d_k 8, MLP 256-128, decoder 64-32
        encoder = (
            (2 * 13 + 13 * 256 + 256 + 2 * 256)
            + (256 * 128 + 128)
            + 16 * 8
            + (256 * 128 + 128 + 2 * 128)
            + 2 * 128
        )
        decoder = (128 * 64 + 64 + 2 * 64) + (64 * 32 + 32 + 2 * 32) + 32 * len(CODES) + len(CODES)
        assert n == encoder + decoder
        assert model.margin == 0 and model.pixelwise
        with torch.no_grad():
            emb, attention = net.encoder(torch.randn(50, 26, 13), return_attention=True)
        assert emb.shape == (50, 128) and attention.shape == (50, 16, 26)
        torch.testing.assert_close(attention.sum(-1), torch.ones(50, 16))
    elif arch == "dilated_cnn":
        assert model.margin == 18 and model.alignment == 1  # sum of 2 d + 2 over dilations 1, 2, 3
        dilations = [
            m.dilation[0] for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (5, 5)
        ]
        assert dilations == [1, 2, 3]
    else:
        assert model.margin == 23 and model.alignment == 4
        series = torch.randn(50, 13, 1, 26)
        with torch.no_grad():
            assert net.encode(series).shape == (50, 32)  # a D = 32 embedding per pixel


@pytest.mark.parametrize("arch", ["fg_unet", "dilated_cnn", "temporal_unet"])
def test_margin_bounds_the_true_receptive_field(arch):
    """Gradients of one output pixel reach input pixels up to the margin, never beyond."""
    model = (
        initialized(arch, SMALL_NAMES, widths=[8, 8, 8])
        if arch != "dilated_cnn"
        else initialized(arch, SMALL_NAMES)
    )
    net = model.net.eval()
    size, a = 72, model.alignment
    reach = 0
    for offset in range(a):
        x = torch.randn(1, len(SMALL_NAMES), size, size, requires_grad=True)
        c = size // 2 + offset
        net(x)[0, :, c, c].sum().backward()
        rows, cols = torch.nonzero(x.grad.abs().sum(1)[0] > 0, as_tuple=True)
        reach = max(reach, int((rows - c).abs().max()), int((cols - c).abs().max()))
    assert reach <= model.margin and reach >= model.margin - a
    assert receptive_margin(net, len(SMALL_NAMES), a) == model.margin


def write_scene(tmp_path, names, h=100, w=90, seed=0):
    rng = np.random.default_rng(seed)
    blocks = rng.normal(0.2, 0.1, (len(names), h // 10 + 1, w // 10 + 1)).astype(np.float32)
    feats = np.kron(blocks, np.ones((1, 10, 10), np.float32))[:, :h, :w] + rng.normal(
        0, 0.03, (len(names), h, w)
    ).astype(np.float32)
    validity = np.full((h, w), 4, np.uint8)
    validity[:9, :13] = 0  # a corner and a strip across window seams without any clear date
    validity[50:54, 10:80] = 0
    feats[:, validity == 0] = -9999.0
    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": w,
        "height": h,
    }
    fpath, vpath = tmp_path / "features.tif", tmp_path / "validity.tif"
    with rasterio.open(
        fpath, "w", **geotiff_profile(base, count=len(names), dtype="float32", nodata=-9999)
    ) as dst:
        dst.write(feats)
        dst.descriptions = tuple(names)
    with rasterio.open(vpath, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)) as dst:
        dst.write(validity, 1)
    return fpath, vpath, feats, validity


@pytest.mark.parametrize("arch", NETWORKS)
def test_windowed_map_equals_whole_image(tmp_path, arch):
    model = initialized(arch, SMALL_NAMES, seed=1)
    fpath, vpath, feats, validity = write_scene(tmp_path, SMALL_NAMES)
    overlap = -(-model.margin // model.alignment) * model.alignment
    cls_path, conf_path = tmp_path / "map.tif", tmp_path / "conf.tif"
    classify_tile(fpath, vpath, model, NOMENCLATURE, cls_path, conf_path, window=32, overlap=overlap)
    with rasterio.open(cls_path) as a, rasterio.open(conf_path) as b:
        cls, conf = a.read(1), b.read(1)
    proba = model.predict_proba_image(feats)  # the whole image at once
    expected = np.asarray(CODES, np.uint8)[proba.argmax(0)]
    expected_conf = np.rint(100 * proba.max(0)).astype(int)
    ok = validity > 0
    assert (cls[~ok] == 0).all() and (conf[~ok] == 255).all()
    np.testing.assert_array_equal(cls[ok], expected[ok])
    assert np.abs(conf[ok].astype(int) - expected_conf[ok]).max() <= 1
    assert len(np.unique(cls[ok])) >= 2  # a map, not a constant
    assert model_image_predictor(model).margin == model.margin
    if arch in ("tempcnn", "ltae"):  # pixel-wise: no context, and the pixels without data are not predicted
        assert (proba[:, ~ok] == 0).all()
        flat = feats.reshape(len(SMALL_NAMES), -1).T[ok.ravel()]
        np.testing.assert_allclose(model.predict_proba(flat), proba[:, ok].T, atol=1e-5)


@pytest.mark.parametrize("arch", ["fg_unet", "dilated_cnn"])
def test_overlap_below_margin_is_refused(tmp_path, arch):
    model = initialized(arch, SMALL_NAMES)
    fpath, vpath, _, _ = write_scene(tmp_path, SMALL_NAMES, h=40, w=40)
    with pytest.raises(ConfigError, match="margin"):
        classify_tile(
            fpath,
            vpath,
            model,
            NOMENCLATURE,
            tmp_path / "m.tif",
            tmp_path / "c.tif",
            window=32,
            overlap=model.margin - 1,
        )
    assert not (tmp_path / "m.tif").exists()
    if model.alignment > 1:
        with pytest.raises(ConfigError, match="multiples of 4"):
            classify_tile(
                fpath,
                vpath,
                model,
                NOMENCLATURE,
                tmp_path / "m.tif",
                tmp_path / "c.tif",
                window=30,
                overlap=24,
            )


@pytest.mark.parametrize("arch", NETWORKS)
def test_saved_model_reloads_and_predicts_identically(tmp_path, arch):
    model = initialized(arch, SMALL_NAMES, seed=2)
    model.save(tmp_path, meta={"architecture": arch, "kind": "network", "model_file": "model.pt"})
    again = load_model(tmp_path, threads=1)
    assert type(again).__name__ == "NetworkClassifier" and again.architecture == arch
    assert list(again.classes_) == list(CODES) and again.feature_names == SMALL_NAMES
    assert again.margin == model.margin and again.hyperparameters == model.hyperparameters
    block = np.random.default_rng(0).normal(0.2, 0.1, (len(SMALL_NAMES), 24, 28)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba_image(block), model.predict_proba_image(block))
    assert json.loads((tmp_path / "model.json").read_text())["kind"] == "network"


def test_reload_errors(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"architecture": "tempcnn", "kind": "network"}))
    with pytest.raises(InputError, match="network weights not found"):
        load_model(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable PyTorch file"):
        load_model(tmp_path)
    model = initialized("tempcnn", SMALL_NAMES)
    with pytest.raises(InputError, match="feature bands"):
        model.predict_proba_image(np.zeros((5, 4, 4), np.float32))


def test_ltae_encodes_the_dates_in_days():
    """L-TAE's date encoding follows the dates of the features (days since the first), not their rank."""
    from cropchain.models.ltae import date_encoding, days_since_first

    assert days_since_first(["20180123", "20180202", "20181005"]) == [0, 10, 255]
    model = initialized("ltae", SMALL_NAMES)
    enc = model.net.encoder
    np.testing.assert_allclose(enc.position[:, :16].numpy(), date_encoding([0, 10, 20], 16).numpy())
    np.testing.assert_allclose(
        enc.position[:, 16:32].numpy(), enc.position[:, :16].numpy()
    )  # repeated for every head
    table = date_encoding([0, 1, 500], 4, period=1000.0).numpy()
    np.testing.assert_allclose(
        table[2], [np.sin(500), np.cos(500), np.sin(500 / 1000**0.5), np.cos(500 / 1000**0.5)], rtol=1e-6
    )
    other = get_model("ltae", seed=0)
    shifted = [n.replace("20180211", "20180711") for n in SMALL_NAMES]  # one of the 3 dates 5 months later
    other.initialize(shifted, CODES, model.mean, model.std)
    assert not torch.allclose(other.net.encoder.position, enc.position)
    with pytest.raises(ValueError, match="built for 3"):
        enc(torch.zeros(2, 4, 4))


@pytest.mark.parametrize("arch", NETWORKS)
def test_device_auto_runs_without_a_gpu_and_a_gpu_maps_like_the_cpu(tmp_path, arch):
    """`device: auto` (the default) puts a network on a CUDA GPU when PyTorch sees one, else on
    the CPU, where nothing changes; a GPU map equals the CPU map up to float32 rounding (1e-4
    on the probabilities). The GPU half runs only where there is a GPU."""
    from cropchain.models.device import resolve_device

    model = initialized(arch, SMALL_NAMES, seed=4)
    assert model.hyperparameters["device"] == "auto" and model.device == torch.device("cpu")
    model.save(tmp_path, meta={"architecture": arch, "kind": "network", "model_file": "model.pt"})
    block = np.random.default_rng(1).normal(0.2, 0.1, (len(SMALL_NAMES), 24, 28)).astype(np.float32)
    cpu = model.predict_proba_image(block)
    on_cpu = load_model(tmp_path, threads=1).to_device("cpu")
    np.testing.assert_array_equal(on_cpu.predict_proba_image(block), cpu)
    auto = load_model(tmp_path, threads=1)
    assert (
        auto.device == resolve_device("auto") and next(auto.net.parameters()).device.type == auto.device.type
    )
    if not torch.cuda.is_available():
        assert auto.device == torch.device("cpu")
        np.testing.assert_array_equal(auto.predict_proba_image(block), cpu)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            auto.to_device("cuda")
        return
    np.testing.assert_allclose(auto.predict_proba_image(block), cpu, atol=1e-4)
