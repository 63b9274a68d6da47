"""Tiled inference: seamless windows, color table, confidence, nodata, feature checks, mosaic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from sklearn.ensemble import RandomForestClassifier

from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import geotiff_profile
from cropchain.mapping import classify as classify_module
from cropchain.mapping.classify import classify_tile, mosaic, pixel_major, predict_proba_image
from cropchain.nomenclature import Nomenclature

H, W, F = 130, 150, 6
CODES = (3, 7, 12)
NOMENCLATURE = Nomenclature(
    codes=CODES, names=("wheat", "maize", "vineyard"), colors=((230, 200, 30), (250, 120, 10), (120, 30, 120))
)
NAMES = [f"20180{m}01_{b}" for m in (3, 6) for b in ("B04", "B08", "NDVI")]
BASE = {
    "crs": CRS.from_epsg(32631),
    "transform": from_origin(500000, 4800000, 10, 10),
    "width": W,
    "height": H,
}


def synthetic_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Parcels of 3 classes (10x10 px blocks) with class-dependent noisy features."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 3, (H // 10 + 1, W // 10 + 1))
    truth = np.kron(blocks, np.ones((10, 10), dtype=int))[:H, :W]
    means = rng.normal(0, 1, (3, F))
    feats = means[truth].transpose(2, 0, 1) + rng.normal(0, 1.2, (F, H, W))
    return feats.astype(np.float32), np.asarray(CODES)[truth]


def fit_forest(feats: np.ndarray, truth: np.ndarray, seed: int = 0) -> RandomForestClassifier:
    rng = np.random.default_rng(seed)
    idx = rng.choice(H * W, 3000, replace=False)
    X = feats.reshape(F, -1).T[idx]
    rf = RandomForestClassifier(n_estimators=15, max_depth=10, random_state=seed, n_jobs=1).fit(
        X, truth.ravel()[idx]
    )
    rf.feature_names = list(NAMES)
    return rf


def write_inputs(
    tmp_path: Path, feats: np.ndarray, names: list[str] = NAMES, *, base: dict = BASE
) -> tuple[Path, Path, np.ndarray]:
    validity = np.full((H, W), 5, dtype=np.uint8)
    validity[:12, :20] = 0  # a corner without clear date
    validity[70:75, 60:140] = 0  # a cloud band crossing window seams
    feats = feats.copy()
    feats[:, validity == 0] = -9999
    fpath, vpath = tmp_path / "features.tif", tmp_path / "validity.tif"
    with rasterio.open(fpath, "w", **geotiff_profile(base, count=F, dtype="float32", nodata=-9999)) as dst:
        dst.write(feats)
        dst.descriptions = tuple(names)
    with rasterio.open(vpath, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)) as dst:
        dst.write(validity, 1)
    return fpath, vpath, validity


def mean3x3_predictor(model, block):
    """Spatial test predictor: 3x3 mean of the pixel probabilities, edges replicated (margin 1)."""
    proba = predict_proba_image(model, block)
    padded = np.pad(proba, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = proba.shape[1:]
    out = np.zeros_like(proba)
    for dy in range(3):  # fixed summation order: the same float result wherever the pixel sits
        for dx in range(3):
            out += padded[:, dy : dy + h, dx : dx + w]
    return out / np.float32(9)


mean3x3_predictor.margin = 1


def expected_maps(model, feats: np.ndarray, validity: np.ndarray, predictor) -> tuple[np.ndarray, np.ndarray]:
    """Prediction of the whole image at once (the reference the tiles must reproduce)."""
    feats = feats.copy()
    feats[:, validity == 0] = -9999
    proba = predictor(model, feats)
    best = proba.argmax(axis=0)
    cls = np.asarray(model.classes_)[best].astype(np.uint8)
    conf = np.rint(100 * proba.max(axis=0)).astype(np.uint8)
    cls[validity == 0] = 0
    conf[validity == 0] = 255
    return cls, conf


@pytest.fixture(scope="module")
def scene():
    feats, truth = synthetic_scene()
    return feats, truth, fit_forest(feats, truth)


def run(tmp_path, scene, **kw):
    feats, _, rf = scene
    fpath, vpath, validity = write_inputs(tmp_path, feats)
    cls_path, conf_path = tmp_path / "map.tif", tmp_path / "conf.tif"
    classify_tile(fpath, vpath, rf, NOMENCLATURE, cls_path, conf_path, **kw)
    with rasterio.open(cls_path) as a, rasterio.open(conf_path) as b:
        return a.read(1), b.read(1), validity


def test_windowed_pixel_model_equals_whole_image(tmp_path, scene):
    feats, truth, rf = scene
    cls, conf, validity = run(tmp_path, scene, window=64, overlap=8)
    exp_cls, exp_conf = expected_maps(rf, feats, validity, predict_proba_image)
    np.testing.assert_array_equal(cls, exp_cls)
    np.testing.assert_array_equal(conf, exp_conf)
    ok = validity > 0
    assert (cls[ok] == truth[ok]).mean() > 0.8  # the forest learnt the scene: the map is not trivial
    assert set(np.unique(cls[ok])) == set(CODES)


@pytest.mark.parametrize("cols", [slice(0, 5000), slice(37, 4133), "sparse", "empty"])
def test_pixel_major_is_the_transposed_copy(cols):
    """The blocked copy equals numpy's transposing copy (tiles cut mid-way on both axes)."""
    rng = np.random.default_rng(3)
    block = rng.normal(size=(37, 5000)).astype(np.float32)  # 37 features: not a multiple of the tile
    if cols == "sparse":
        cols = np.flatnonzero(rng.random(5000) > 0.4)
    elif cols == "empty":
        cols = np.array([], dtype=np.int64)
    expected = np.ascontiguousarray(block[:, cols].T)
    got = pixel_major(block, cols)
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    buffer = np.full(expected.shape, np.nan, dtype=np.float32)
    assert pixel_major(block, cols, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, expected)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        pixel_major(block, cols, out=np.empty((expected.shape[0] + 1, 37), np.float32))


def test_predict_proba_image_by_chunks_equals_per_pixel_prediction(scene, monkeypatch):
    """Chunked prediction (contiguous and gathered chunks) = the forest on the pixel table."""
    feats, _, rf = scene
    monkeypatch.setattr(classify_module, "PREDICT_CHUNK", 1000)  # many chunks, the last one partial
    monkeypatch.setattr(classify_module, "_TRANSPOSE_TILE", (96, 4))
    valid = np.ones(feats.shape[1:], dtype=bool)
    valid[40:60, :] = False  # a nodata band: gathered chunks beside contiguous ones
    valid[::7, ::3] = False
    proba = predict_proba_image(rf, feats, valid)
    table = feats.reshape(F, -1).T
    expected = rf.predict_proba(table[valid.reshape(-1)]).astype(np.float32)
    np.testing.assert_array_equal(proba[:, valid].T, expected)
    assert not proba[:, ~valid].any()


def test_windowed_spatial_predictor_equals_whole_image(tmp_path, scene):
    feats, _, rf = scene
    cls, conf, validity = run(tmp_path, scene, window=64, overlap=8, predictor=mean3x3_predictor)
    exp_cls, exp_conf = expected_maps(rf, feats, validity, mean3x3_predictor)
    np.testing.assert_array_equal(cls, exp_cls)
    np.testing.assert_array_equal(conf, exp_conf)


def test_spatial_predictor_without_overlap_shows_seams(tmp_path, scene):
    feats, _, rf = scene
    no_margin = lambda m, b: mean3x3_predictor(m, b)  # noqa: E731  (same filter, margin not declared)
    cls, conf, validity = run(tmp_path, scene, window=64, overlap=0, predictor=no_margin)
    exp_cls, exp_conf = expected_maps(rf, feats, validity, mean3x3_predictor)
    differ = (cls != exp_cls) | (conf != exp_conf)
    assert differ.any()
    rows, cols = np.nonzero(differ)
    # every difference sits next to a window seam (rows/cols 63|64, 127|128)
    assert np.all(np.isin(rows % 64, (0, 63)) | np.isin(cols % 64, (0, 63)))


def test_overlap_below_predictor_margin_is_refused(tmp_path, scene):
    with pytest.raises(ConfigError, match="margin"):
        run(tmp_path, scene, window=64, overlap=0, predictor=mean3x3_predictor)


def test_outputs_color_table_confidence_nodata(tmp_path, scene):
    cls, conf, validity = run(tmp_path, scene, window=64, overlap=8)
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        cmap = src.colormap(1)
        assert cmap[0] == (0, 0, 0, 0)
        for code, rgb in zip(NOMENCLATURE.codes, NOMENCLATURE.colors):
            assert cmap[code] == (*rgb, 255)
        assert src.tags(1)["CLASS_12"] == "vineyard"
        assert src.descriptions[0] == "class code"
    with rasterio.open(tmp_path / "conf.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255
    ok = validity > 0
    assert np.all(cls[~ok] == 0) and np.all(conf[~ok] == 255)
    assert np.all(np.isin(cls[ok], CODES))
    # max of 3 probabilities is >= 1/3
    assert conf[ok].min() >= 33 and conf[ok].max() <= 100
    assert conf[ok].min() < 100  # some uncertainty: the range is really exercised
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_feature_name_mismatch_names_file_and_features(tmp_path, scene):
    feats, _, rf = scene
    bad = list(NAMES)
    bad[2] = "20180301_NDWI"
    fpath, vpath, _ = write_inputs(tmp_path, feats, bad)
    with pytest.raises(InputError, match=r"features\.tif.*20180301_NDVI.*20180301_NDWI") as err:
        classify_tile(fpath, vpath, rf, NOMENCLATURE, tmp_path / "m.tif", tmp_path / "c.tif")
    assert err.value.fix
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
    fpath, vpath, _ = write_inputs(tmp_path, feats, swapped)
    with pytest.raises(InputError, match="different order"):
        classify_tile(fpath, vpath, rf, NOMENCLATURE, tmp_path / "m.tif", tmp_path / "c.tif")
    assert not (tmp_path / "m.tif").exists()


def test_model_classes_outside_nomenclature(tmp_path, scene):
    feats, _, rf = scene
    fpath, vpath, _ = write_inputs(tmp_path, feats)
    small = Nomenclature(codes=(3, 7), names=("wheat", "maize"), colors=((0, 0, 0), (1, 1, 1)))
    with pytest.raises(InputError, match=r"\[12\]"):
        classify_tile(fpath, vpath, rf, small, tmp_path / "m.tif", tmp_path / "c.tif")


def test_validity_on_another_grid(tmp_path, scene):
    feats, _, rf = scene
    fpath, _, _ = write_inputs(tmp_path, feats)
    other = tmp_path / "other"
    other.mkdir()
    shifted = {**BASE, "transform": from_origin(600000, 4800000, 10, 10)}
    _, vpath, _ = write_inputs(other, feats, base=shifted)
    with pytest.raises(InputError, match="validity.tif.*grid"):
        classify_tile(fpath, vpath, rf, NOMENCLATURE, tmp_path / "m.tif", tmp_path / "c.tif")


def _tile_map(path: Path, values: np.ndarray, x0: float, crs: int = 32631) -> Path:
    base = {
        "crs": CRS.from_epsg(crs),
        "transform": from_origin(x0, 4800000, 10, 10),
        "width": values.shape[1],
        "height": values.shape[0],
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(values, 1)
        dst.write_colormap(1, NOMENCLATURE.color_table())
        dst.set_band_description(1, "class code")
    return path


def test_mosaic_first_wins_keeps_color_table(tmp_path):
    a = np.full((40, 50), 3, np.uint8)
    a[:, :5] = 0  # nodata in a, where b has data
    b = np.full((40, 50), 7, np.uint8)
    pa = _tile_map(tmp_path / "a.tif", a, 500000)
    pb = _tile_map(tmp_path / "b.tif", b, 500000 + 300)  # b starts 30 px east: 20 px overlap
    out = tmp_path / "mosaic.tif"
    mosaic([str(pa), str(pb)], str(out))  # paths as Snakemake gives them: strings
    with rasterio.open(out) as src:
        m = src.read(1)
        assert m.shape == (40, 80) and src.nodata == 0
        assert src.colormap(1)[12] == (120, 30, 120, 255)
        assert src.descriptions[0] == "class code"
    assert np.all(m[:, :5] == 0)
    assert np.all(m[:, 5:50] == 3)  # overlap (cols 30-49): first tile wins
    assert np.all(m[:, 50:] == 7)


def test_mosaic_reprojects_other_crs(tmp_path):
    a = _tile_map(tmp_path / "a.tif", np.full((20, 20), 3, np.uint8), 500000)
    # the same area in EPSG:32632 is another grid: it is warped to 32631
    from rasterio.warp import transform as warp_xy

    xs, ys = warp_xy("EPSG:32631", "EPSG:32632", [500200], [4800000])
    base = {
        "crs": CRS.from_epsg(32632),
        "transform": from_origin(xs[0], ys[0], 10, 10),
        "width": 20,
        "height": 20,
    }
    pb = tmp_path / "b.tif"
    with rasterio.open(pb, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(np.full((20, 20), 7, np.uint8), 1)
    out = tmp_path / "m.tif"
    mosaic([a, pb], out)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32631
        m = src.read(1)
    assert (m == 3).sum() == 400 and (m == 7).sum() > 100


def test_mosaic_rejects_mixed_kinds(tmp_path):
    a = _tile_map(tmp_path / "a.tif", np.full((10, 10), 3, np.uint8), 500000)
    base = {**BASE, "width": 10, "height": 10}
    b = tmp_path / "b.tif"
    with rasterio.open(b, "w", **geotiff_profile(base, count=1, dtype="float32", nodata=-9999)) as dst:
        dst.write(np.zeros((10, 10), np.float32), 1)
    with pytest.raises(InputError, match="b.tif"):
        mosaic([a, b], tmp_path / "m.tif")
    assert not (tmp_path / "m.tif").exists()


# --- probabilities, uncertainty, Bayesian smoothing (issue 13) ---

# a nomenclature with a class the model does not know (code 20, between the model's classes)
NOMENCLATURE4 = Nomenclature(
    codes=(3, 20, 7, 12),
    names=("wheat", "fallow", "maize", "vineyard"),
    colors=((230, 200, 30), (200, 200, 200), (250, 120, 10), (120, 30, 120)),
)


def run_products(tmp_path, scene, **kw):
    """classify_tile with every product; returns the maps read back."""
    feats, _, rf = scene
    fpath, vpath, validity = write_inputs(tmp_path, feats)
    paths = {name: tmp_path / f"{name}.tif" for name in ("map", "conf", "proba", "unc")}
    classify_tile(
        fpath,
        vpath,
        rf,
        NOMENCLATURE4,
        paths["map"],
        paths["conf"],
        out_probabilities=paths["proba"],
        out_uncertainty=paths["unc"],
        uncertainty=("margin", "entropy"),
        **kw,
    )
    out = {}
    for name, path in paths.items():
        with rasterio.open(path) as src:
            out[name] = src.read() if src.count > 1 else src.read(1)
    return out, paths, validity


def whole_image_proba(model, feats, validity, predictor, smoothing=None):
    """[K, H, W] probabilities of the whole image at once (smoothed with the whole image when asked)."""
    from cropchain.mapping.smoothing import bayes_smooth

    feats = feats.copy()
    feats[:, validity == 0] = -9999
    proba = predictor(model, feats)
    if smoothing:
        proba = bayes_smooth(
            proba,
            smoothing["window_size"],
            smoothing["smoothness"],
            smoothing["neigh_fraction"],
            valid=validity > 0,
        )
    return proba


def test_probabilities_and_uncertainty_are_cogs_consistent_with_the_labels(tmp_path, scene):
    from rio_cogeo.cogeo import cog_validate

    from cropchain.mapping.smoothing import entropy_uncertainty, margin_uncertainty

    feats, _, rf = scene
    out, paths, validity = run_products(tmp_path, scene, window=64, overlap=8, predictor=mean3x3_predictor)
    for path in paths.values():
        valid_cog, errors, _ = cog_validate(str(path))
        assert valid_cog, (path.name, errors)
    with rasterio.open(paths["proba"]) as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.descriptions == ("wheat", "fallow", "maize", "vineyard")
        assert src.tags(2)["CLASS_CODE"] == "20"
    with rasterio.open(paths["unc"]) as src:
        assert src.descriptions == ("margin", "entropy") and src.nodata == 255
    ok = validity > 0
    proba, cls = out["proba"], out["map"]
    assert np.all(proba[:, ~ok] == 255) and np.all(out["unc"][:, ~ok] == 255)
    assert np.all(proba[1][ok] == 0)  # the class the model does not know
    sums = proba[:, ok].astype(int).sum(axis=0)
    assert np.all(np.abs(sums - 100) <= 4), (sums.min(), sums.max())  # rounding: +- number of classes
    # argmax of the probabilities is the label: the label's band is always a maximum, and the
    # first maximum (numpy's argmax) is the label wherever rounding leaves no tie
    codes = np.asarray(NOMENCLATURE4.codes)
    band_of_label = np.searchsorted(codes, cls[ok], sorter=np.argsort(codes))
    band_of_label = np.argsort(codes)[band_of_label]
    p_ok = proba[:, ok]
    assert np.all(p_ok[band_of_label, np.arange(p_ok.shape[1])] == p_ok.max(axis=0))
    unique = (p_ok == p_ok.max(axis=0)).sum(axis=0) == 1
    assert unique.mean() > 0.95
    assert np.all(codes[p_ok.argmax(axis=0)][unique] == cls[ok][unique])
    assert np.all(out["conf"][ok] == p_ok.max(axis=0))
    # windowed = whole image, for the probabilities and both uncertainties
    whole = whole_image_proba(rf, feats, validity, mean3x3_predictor)
    expected = np.full((4, H, W), 255, np.uint8)
    expected[:, ok] = 0
    for i, band in enumerate((0, 2, 3)):  # model classes 3, 7, 12 -> bands of the nomenclature
        expected[band][ok] = np.rint(100 * whole[i][ok]).astype(np.uint8)
    np.testing.assert_array_equal(proba, expected)
    np.testing.assert_array_equal(out["unc"][0], margin_uncertainty(whole, ok))
    np.testing.assert_array_equal(out["unc"][1], entropy_uncertainty(whole, ok))
    assert 0 < out["unc"][0][ok].mean() < 100  # the range is exercised


def test_windowed_smoothing_equals_whole_image_smoothing_and_cleans_the_map(tmp_path, scene):
    feats, truth, rf = scene
    smoothing = {"window_size": 7, "smoothness": 20.0, "neigh_fraction": 0.5}
    for predictor in (
        None,
        mean3x3_predictor,
    ):  # pixel classifier (margin 0) and a spatial predictor (margin 1)
        out, _, validity = run_products(
            tmp_path, scene, window=32, overlap=4, predictor=predictor, smoothing=smoothing
        )
        whole = whole_image_proba(rf, feats, validity, predictor or predict_proba_image, smoothing)
        ok = validity > 0
        exp_cls = np.zeros((H, W), np.uint8)
        exp_cls[ok] = np.asarray(rf.classes_)[whole.argmax(axis=0)][ok]
        np.testing.assert_array_equal(out["map"], exp_cls)
        np.testing.assert_array_equal(
            out["proba"][[0, 2, 3]][:, ok], np.rint(100 * whole[:, ok]).astype(np.uint8)
        )
    # smoothing changes the pixel classifier's map towards the parcels
    (tmp_path / "plain").mkdir()
    plain = run(tmp_path / "plain", scene, window=32, overlap=4)[0]
    smoothed = run_products(tmp_path, scene, window=32, overlap=4, smoothing=smoothing)[0]["map"]
    before, after = (plain[ok] == truth[ok]).mean(), (smoothed[ok] == truth[ok]).mean()
    assert after > before + 0.05, (before, after)  # measured 0.849 -> 0.958


def test_bad_smoothing_and_uncertainty_settings_are_refused(tmp_path, scene):
    with pytest.raises(ConfigError, match="window_size"):
        run_products(tmp_path, scene, window=64, overlap=8, smoothing={"window_size": 4})
    with pytest.raises(ConfigError, match="smoothness"):
        run_products(tmp_path, scene, window=64, overlap=8, smoothing={"smoothness": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="uncertainty"):
        feats, _, rf = scene
        fpath, vpath, _ = write_inputs(tmp_path, feats)
        classify_tile(
            fpath,
            vpath,
            rf,
            NOMENCLATURE,
            tmp_path / "m.tif",
            tmp_path / "c.tif",
            out_uncertainty=tmp_path / "u.tif",
            uncertainty=("variance",),
        )
