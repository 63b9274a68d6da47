"""Presto encoder written in cropchain: the published weights reproduce the original embeddings."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from affine import Affine
from conftest import SHARED
from rasterio.crs import CRS

from cropchain.errors import InputError
from cropchain.models.presto import (
    CHANNELS,
    WEIGHTS_SHA256,
    PrestoEncoder,
    embed_composites,
    load_presto,
    month_table,
    pixel_latlon,
    position_table,
    presto_inputs,
)

PRESTO = SHARED / "models" / "presto"
WEIGHTS = PRESTO / "default_model.pt"
REFERENCE = PRESTO / "presto_reference.npz"


@pytest.fixture(autouse=True, scope="module")
def one_thread(torch_one_thread):
    """Every test of this module runs PyTorch on one thread (conftest)."""


@pytest.fixture(scope="module")
def reference():
    if not (WEIGHTS.is_file() and REFERENCE.is_file()):
        pytest.skip(
            f"Presto weights and reference embeddings not found in {PRESTO} "
            "(../shared is absent on this machine)"
        )
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module")
def encoder(reference):
    return load_presto(WEIGHTS)


def s2_in_cropchain_order(ref, case):
    """The fixture's raw S2 (bands B2 .. B12) is already in the order of presto.S2_BANDS."""
    assert [str(b) for b in ref["s2_band_names"]] == [
        "B2",
        "B3",
        "B4",
        "B5",
        "B6",
        "B7",
        "B8",
        "B8A",
        "B11",
        "B12",
    ]
    return ref[f"{case}_s2"]


@pytest.mark.parametrize("case", ["case1", "case2"])
def test_embeddings_match_the_original_from_raw_inputs(reference, encoder, case):
    """int16 DN reflectance + cloud mask + month + lat/lon -> cropchain's preprocessing and
    encoder -> the original implementation's embeddings to 1e-5."""
    s2 = s2_in_cropchain_order(reference, case)
    clear = ~reference[f"{case}_cloud_mask"]
    x, mask, dw = presto_inputs(s2, clear)
    # the preprocessing agrees with the original's inputs wherever they count (unmasked values, the mask
    # per group)
    ref_mask = reference[f"{case}_mask"]
    ok = ref_mask == 0
    np.testing.assert_allclose(x[ok], reference[f"{case}_x"][ok], atol=1e-6)
    np.testing.assert_array_equal(mask[:, :, 2:12], ref_mask[:, :, 2:12])
    np.testing.assert_array_equal(mask[:, :, 16], ref_mask[:, :, 16])
    np.testing.assert_array_equal(dw, reference[f"{case}_dynamic_world"])
    with torch.no_grad():
        emb = encoder(
            torch.from_numpy(x),
            torch.from_numpy(mask),
            torch.from_numpy(reference[f"{case}_latlon"]),
            int(reference[f"{case}_month"]),
            torch.from_numpy(dw),
        ).numpy()
    ref = reference[f"{case}_embedding"]
    assert emb.shape == (16, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=1e-5)
    assert np.abs(ref).max() > 1.0  # real embeddings, not near-zero vectors


def test_tokens_match_the_original_sequence(reference, encoder):
    """The token sequence entering the first block (case 2: three cloudy months dropped per pixel)."""
    x, mask, dw = presto_inputs(s2_in_cropchain_order(reference, "case2"), ~reference["case2_cloud_mask"])
    with torch.no_grad():
        tokens, keep = encoder.tokens(
            torch.from_numpy(x),
            torch.from_numpy(mask),
            torch.from_numpy(reference["case2_latlon"]),
            0,
            torch.from_numpy(dw),
        )
    assert tokens.shape == (16, 9 * 12 + 2, 128) and (keep.sum(1) == 55).all()
    kept = torch.stack([tokens[i][keep[i]] for i in range(16)]).numpy()
    np.testing.assert_allclose(kept, reference["case2_debug_tokens_in"], atol=1e-6)


def test_pixel_embedding_is_independent_of_its_batch(reference, encoder):
    """Pixels with different numbers of kept tokens in one batch = each pixel alone."""
    s2 = np.concatenate([reference["case1_s2"][:4], reference["case2_s2"][:4]])
    clear = np.concatenate([~reference["case1_cloud_mask"][:4], ~reference["case2_cloud_mask"][:4]])
    x, mask, dw = (torch.from_numpy(a) for a in presto_inputs(s2, clear))
    latlons = torch.tensor([[43.5, 3.5]] * 8)
    with torch.no_grad():
        together = encoder(x, mask, latlons, torch.zeros(8, dtype=torch.long), dw)
        alone = torch.cat(
            [encoder(x[i : i + 1], mask[i : i + 1], latlons[i : i + 1], 0, dw[i : i + 1]) for i in range(8)]
        )
    np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-5)
    np.testing.assert_allclose(together[:4].numpy(), reference["case1_embedding"][:4], atol=1e-5)
    # masking matters: the cloudy months of case 2 change the embedding of the same pixels
    assert np.abs(together[4:].numpy() - together[:4].numpy()).max() > 1e-2


def test_fixed_tables_are_the_stored_ones(reference, encoder):
    np.testing.assert_allclose(encoder.month_embed.weight.numpy(), month_table().numpy(), atol=1e-7)
    np.testing.assert_allclose(encoder.pos_embed[0].numpy(), position_table().numpy(), atol=1e-7)
    learned = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    assert (
        learned == 404_160 - 24 * 64 - 12 * 32
    )  # FACTS.md: 404,160 stored values including both fixed tables


def test_presto_inputs_normalisation_and_mask():
    s2 = np.full((2, 3, 10), 1000, np.int16)
    s2[:, :, 6] = 3000  # B08
    clear = np.array([[True, False, True], [True, True, True]])
    x, mask, dw = presto_inputs(s2, clear)
    assert x.shape == mask.shape == (2, 3, len(CHANNELS)) and x.dtype == mask.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 2], 0.1, rtol=1e-6)
    np.testing.assert_allclose(x[0, 0, 16], 0.5, rtol=1e-6)  # (3000 - 1000) / (3000 + 1000)
    assert (mask[0, 1] == 1).all() and (mask[0, 0, 2:12] == 0).all() and (mask[0, 0, 16] == 0)
    assert (mask[:, :, [0, 1, 12, 13, 14, 15]] == 1).all()  # no S1, ERA5, SRTM in cropchain
    assert (dw == 9).all()
    with pytest.raises(ValueError, match=r"\[N, T, 10\]"):
        presto_inputs(s2[:, :, :4])


def test_weights_errors_name_the_file_and_the_fix(tmp_path, reference):
    with pytest.raises(
        InputError,
        match=r"missing\.pt: Presto weights not found .*presto\.weights.*download default_model\.pt",
    ):
        load_presto(tmp_path / "missing.pt")
    bad = tmp_path / "default_model.pt"
    shutil.copy(WEIGHTS, bad)
    with open(bad, "r+b") as f:  # one byte changed
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(
        InputError, match=rf"sha256 .* differs from the expected {WEIGHTS_SHA256}.*presto\.sha256"
    ):
        load_presto(bad)
    torch.save({"encoder.norm.weight": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not the Presto encoder's state dict"):
        load_presto(tmp_path / "other.pt", sha256=None)


def test_encoder_builds_without_weights():
    """The architecture alone (random weights) gives [B, 128] for any T <= 24."""
    torch.manual_seed(0)
    enc = PrestoEncoder().eval()
    x, mask, dw = (torch.from_numpy(a) for a in presto_inputs(np.full((3, 5, 10), 800, np.int16)))
    with torch.no_grad():
        assert enc(x, mask, torch.zeros(3, 2), 4, dw).shape == (3, 128)
    with pytest.raises(ValueError, match="T <= 24"):
        enc(torch.zeros(1, 25, 17), None, torch.zeros(1, 2))


def test_configuration_section(reference):
    """presto.weights is configuration; the schema's default sha256 is the published file's."""
    import copy

    from test_config import MINIMAL

    from cropchain.config import validate_config
    from cropchain.errors import ConfigError
    from cropchain.models.presto import presto_from_config

    cfg = validate_config({**copy.deepcopy(MINIMAL), "presto": {"weights": str(WEIGHTS)}})
    assert cfg["presto"]["sha256"] == WEIGHTS_SHA256 and cfg["presto"]["batch_size"] == 256
    assert isinstance(presto_from_config(cfg), PrestoEncoder)
    with pytest.raises(ConfigError, match="presto"):
        validate_config({**copy.deepcopy(MINIMAL), "presto": {"sha256": WEIGHTS_SHA256}})
    with pytest.raises(ConfigError, match=r"presto\.weights: .*add a `presto:` section"):
        presto_from_config(validate_config(copy.deepcopy(MINIMAL)))
    with pytest.raises(InputError, match="sha256"):
        presto_from_config(
            validate_config(
                {**copy.deepcopy(MINIMAL), "presto": {"weights": str(WEIGHTS), "sha256": "0" * 64}}
            )
        )


# ---------------------------------------------------------- the embedding step of a tile's monthly composites

RAW_ORDER = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]  # raw.tif's band order
MONTHS = [f"2018{m:02d}15" for m in range(1, 13)]


def synthetic_block(h=6, w=5, seed=0):
    """int16 composites [12, 10, H, W] (raw.tif band order) of a green-up, and a clear mask."""
    rng = np.random.default_rng(seed)
    green = np.sin(np.linspace(0, np.pi, 12))[:, None, None, None]
    base = rng.uniform(300, 1500, (1, 10, h, w))
    nir = np.zeros((1, 10, 1, 1))
    nir[0, [3, 6, 7]] = 2500  # B08, B07, B8A
    comp = np.rint(base + green * nir + rng.normal(0, 50, (12, 10, h, w))).clip(1, 9000).astype(np.int16)
    clear = rng.random((12, h, w)) > 0.3
    return comp, clear


def random_encoder(seed=0):
    torch.manual_seed(seed)
    return PrestoEncoder().eval()


def test_pixel_latlon_from_the_geotransform():
    # UTM 31N: x = 500 km is the central meridian, 3 degrees east
    ll = pixel_latlon(Affine(10, 0, 499_995, 0, -10, 4_800_005), CRS.from_epsg(32631), 3, 4)
    assert ll.shape == (2, 3, 4)
    np.testing.assert_allclose(ll[1, :, 0], 3.0, atol=1e-9)
    assert (
        43.3 < ll[0, 0, 0] < 43.4
        and (np.diff(ll[0], axis=0) < 0).all()
        and (np.diff(ll[1], axis=1) > 0).all()
    )


def test_embed_composites_shapes_masking_and_determinism():
    comp, clear = synthetic_block()
    enc = random_encoder()
    transform, crs = Affine(10, 0, 500_000, 0, -10, 4_800_000), CRS.from_epsg(32631)
    emb = embed_composites(comp, clear, RAW_ORDER, MONTHS, transform, crs, enc, batch_size=7)
    assert emb.shape == (128, 6, 5) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # deterministic, and independent of the batching (7 px, 30 px)
    np.testing.assert_array_equal(
        embed_composites(comp, clear, RAW_ORDER, MONTHS, transform, crs, enc, batch_size=7), emb
    )
    np.testing.assert_allclose(
        embed_composites(comp, clear, RAW_ORDER, MONTHS, transform, crs, enc, batch_size=30), emb, atol=1e-5
    )
    # masking has an effect: one more month masked at one pixel changes that pixel only
    r, c = 2, 3
    k = int(np.flatnonzero(clear[:, r, c])[0])
    cloudier = clear.copy()
    cloudier[k, r, c] = False
    other = embed_composites(comp, cloudier, RAW_ORDER, MONTHS, transform, crs, enc, batch_size=7)
    changed = np.abs(other - emb).max(axis=0) > 1e-4
    assert changed[r, c] and changed.sum() == 1
    # a masked month's values are not seen at all
    noisy = np.where(clear[:, None], comp, 7000).astype(np.int16)
    np.testing.assert_allclose(
        embed_composites(noisy, clear, RAW_ORDER, MONTHS, transform, crs, enc, batch_size=7), emb, atol=1e-5
    )
    # nodata pixels and pixels without any clear month: NaN
    comp2, clear2 = comp.copy(), clear.copy()
    comp2[:, :, 0, 0] = -32768
    clear2[:, 5, 4] = False
    out = embed_composites(comp2, clear2, RAW_ORDER, MONTHS, transform, crs, enc)
    assert np.isnan(out[:, 0, 0]).all() and np.isnan(out[:, 5, 4]).all() and np.isnan(out).sum() == 2 * 128
    # the months and the position count
    assert (
        np.abs(
            embed_composites(comp, clear, RAW_ORDER, MONTHS[6:] + MONTHS[:6], transform, crs, enc) - emb
        ).max()
        > 1e-3
    )
    far = Affine(10, 0, 500_000, 0, -10, 6_800_000)
    assert np.abs(embed_composites(comp, clear, RAW_ORDER, MONTHS, far, crs, enc) - emb).max() > 1e-3


def test_embed_composites_errors():
    comp, clear = synthetic_block(3, 3)
    enc = random_encoder()
    args = (Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(32631), enc)
    with pytest.raises(InputError, match=r"gapfilled\.tif: Presto reads the bands .*missing \['B8A'\]"):
        embed_composites(comp[:, :9], clear, RAW_ORDER[:7] + RAW_ORDER[8:], MONTHS, *args)
    with pytest.raises(InputError, match="do not match"):
        embed_composites(comp, clear[:6], RAW_ORDER, MONTHS, *args)


def test_embed_composites_reproduces_the_reference(reference, encoder):
    """The reference pixels laid out as a 4 x 4 block (in raw.tif's band order) at (43.5 N, 3.5 E):
    the embedding step gives the original embeddings."""
    s2 = s2_in_cropchain_order(reference, "case2")  # [16, 12, 10] in S2_BANDS order
    order = [
        RAW_ORDER.index(b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    ]
    comp = np.empty((12, 10, 4, 4), np.int16)
    comp[:, order] = s2.transpose(1, 2, 0).reshape(12, 10, 4, 4)
    clear = (~reference["case2_cloud_mask"]).T.reshape(12, 4, 4)
    res = 1e-9  # degrees: every pixel at (43.5, 3.5) to float32 precision
    transform = Affine(res, 0, 3.5 - 2 * res, 0, -res, 43.5 + 2 * res)
    emb = embed_composites(comp, clear, RAW_ORDER, MONTHS, transform, "EPSG:4326", encoder, batch_size=5)
    np.testing.assert_allclose(emb.reshape(128, 16).T, reference["case2_embedding"], atol=1e-5, rtol=1e-5)
