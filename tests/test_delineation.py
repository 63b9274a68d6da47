"""Field delineation: RC matching, fragmentation / agglomeration, window merging, the Mask R-CNN
and a tiny train -> predict -> evaluate round trip (cropchain.delineation.fields,
cropchain.delineation.metrics)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin
from shapely.geometry import box

from cropchain.delineation.fields import (
    Detection,
    merge_detections,
    patch_targets,
    predict_delineation,
    select_date,
    train_delineation,
    variant_channels,
    window_origins,
)
from cropchain.delineation.metrics import (
    InstanceScores,
    evaluate_instances,
    match,
    rc_matrix,
    summarize_delineation,
)
from cropchain.errors import ConfigError
from cropchain.models.mask_rcnn import IgnoringRPN, build_mask_rcnn, labelled_share

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- RC matching


def test_rc_is_the_smaller_of_the_two_overlap_shares():
    inter = np.array([[50.0, 0.0], [0.0, 90.0]])
    rc = rc_matrix(inter, np.array([100.0, 100.0]), np.array([200.0, 90.0]))
    assert rc[0, 0] == pytest.approx(0.25)  # 50/100 of T, 50/200 of P
    assert rc[1, 1] == pytest.approx(0.9)  # 90/100 of T, 90/90 of P
    assert rc[0, 1] == 0


def test_matches_are_one_to_one():
    rc = np.array([[0.9, 0.85], [0.0, 0.2]])  # two predictions of the same target
    assert match(rc, 0.5) == [(0, 0)]
    assert match(rc, 0.95) == []


# Five validation parcels (10 m x 10 m units) and six predictions with known answers
T = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10), box(0, 20, 10, 30), box(12, 20, 22, 30)]
P = [
    box(0, 0, 10, 9),  # T1 almost exactly: RC 0.9
    box(20, 0, 23, 10),
    box(23, 0, 27, 10),  # two fragments of T2 (30% and 40% of it)
    box(38, 0, 62, 10),  # T3 plus unlabelled land: covers T3, 42% of it inside targets
    box(100, 100, 110, 110),  # unlabelled land only: not counted
    box(0, 20, 22, 30),
]  # T4 and T5 together: agglomeration
S = [0.9, 0.75, 0.75, 0.95, 0.99, 0.85]


def test_scores_at_the_study_threshold_pairs():
    sc = InstanceScores(T, P, S)
    assert sc.counted.tolist() == [True, True, True, True, False, True]
    low = sc.at(0.7, 0.5)
    assert (low["n_predictions"], low["n_matches"], low["n_targets"]) == (5, 1, 5)
    assert (
        low["precision"] == pytest.approx(0.2)
        and low["recall"] == pytest.approx(0.2)
        and low["f1"] == pytest.approx(0.2)
    )
    high = sc.at(0.8, 0.8)  # the fragments (0.75) drop out
    assert (high["n_predictions"], high["n_matches"]) == (3, 1)
    assert high["precision"] == pytest.approx(1 / 3) and high["recall"] == pytest.approx(0.2)
    assert high["f1"] == pytest.approx(0.25)


def test_fragmentation_and_agglomeration_on_known_polygons():
    sc = InstanceScores(T, P, S)
    fa = sc.fragmentation_agglomeration(0.7)
    assert fa["per_target_fragments"] == [1, 2, 0, 0, 0]  # T2 is split in two
    assert fa["fragmentation_rate"] == pytest.approx(1 / 5)
    # P1 covers T1, P4 covers T3, P6 covers T4 and T5: one agglomerating prediction of three covering ones
    assert fa["per_target_agglomerated_with"] == [1, 0, 1, 2, 2]
    assert fa["agglomeration_rate"] == pytest.approx(1 / 3)
    assert fa["agglomerated_target_rate"] == pytest.approx(2 / 5)
    assert sc.fragmentation_agglomeration(0.8)["fragmentation_rate"] == 0  # fragments below the confidence


def test_no_prediction_gives_zero_scores():
    res = InstanceScores(T, [], []).at(0.7, 0.5)
    assert res["precision"] == res["recall"] == res["f1"] == 0 and res["n_targets"] == 5


# ----------------------------------------------------------------------------- windows


def test_window_origins_cover_the_axis_with_the_overlap():
    starts = window_origins(353, 128, 32)
    assert starts[0] == 0 and starts[-1] + 128 == 353
    assert all(b - a <= 128 - 32 for a, b in zip(starts, starts[1:]))
    assert window_origins(100, 128, 32) == [0]
    with pytest.raises(ConfigError):
        window_origins(300, 32, 32)


def _det(r, c, h, w, score, cut=False):
    return Detection(r, c, np.ones((h, w), dtype=bool), score, cut)


def test_a_field_found_whole_in_two_windows_is_kept_once_with_the_higher_score():
    kept = merge_detections(
        [_det(10, 100, 12, 12, 0.7), _det(10, 100, 12, 11, 0.9), _det(10, 130, 12, 12, 0.8)]
    )
    assert len(kept) == 2
    assert sorted(d.score for d in kept) == [0.8, 0.9]


def test_a_cut_piece_gives_way_to_the_whole_field_of_the_neighbouring_window():
    whole = _det(10, 90, 10, 20, 0.6)  # cols 90-109, whole in the right window
    piece = _det(10, 90, 10, 6, 0.95, cut=True)  # cols 90-95, cut by the left window's edge at col 96
    kept = merge_detections([piece, whole])
    assert len(kept) == 1 and kept[0] is whole


def test_pieces_of_a_field_larger_than_the_overlap_are_merged():
    left = _det(0, 50, 20, 50, 0.8, cut=True)  # cols 50-99, cut at the left window's right edge
    right = _det(0, 80, 20, 60, 0.7, cut=True)  # cols 80-139, cut at the right window's left edge
    other = _det(40, 50, 10, 10, 0.9)
    kept = merge_detections([left, right, other])
    assert len(kept) == 2
    merged = next(d for d in kept if d.pieces == 2)
    assert (merged.col, merged.mask.shape, merged.area) == (50, (20, 90), 20 * 90) and merged.score == 0.8


def test_neighbouring_fields_stay_separate():
    kept = merge_detections(
        [_det(0, 0, 10, 10, 0.9), _det(0, 10, 10, 10, 0.8), _det(0, 5, 10, 10, 0.7, cut=True)]
    )
    assert len(kept) == 2  # the cut piece straddles both and is half inside the first


# ----------------------------------------------------------------------------- inputs


DESCRIPTIONS = [
    f"{d}_{b}" for d in ("20180602", "20180702", "20180801") for b in ("B02", "B03", "B04", "B08")
] + [f"{d}_NDVI" for d in ("20180602", "20180702", "20180801")]


def test_variant_channels():
    idx, names = variant_channels(DESCRIPTIONS, "bgrn", None)
    assert names == ["20180702_B02", "20180702_B03", "20180702_B04", "20180702_B08"] and idx == [5, 6, 7, 8]
    idx, names = variant_channels(DESCRIPTIONS, "bgr_ndvi", "2018-06-02")
    assert names[-1] == "20180602_NDVI" and idx == [1, 2, 3, 13]
    assert variant_channels(DESCRIPTIONS, "ndvi_stack", None)[0] == [13, 14, 15]
    with pytest.raises(ConfigError, match="not on the output date grid"):
        variant_channels(DESCRIPTIONS, "bgrn", "20180703")
    with pytest.raises(ConfigError, match="unknown input variant"):
        variant_channels(DESCRIPTIONS, "rgb", None)
    with pytest.raises(ConfigError, match="absent from features"):
        variant_channels(DESCRIPTIONS[:12], "bgr_ndvi", None)


def test_summer_date_by_default():
    assert select_date(["20180123", "20180622", "20180702", "20180930"], None) == "20180702"


def test_patch_targets_boxes_and_masks():
    inst = np.zeros((16, 16), dtype=np.int32)
    inst[2:5, 3:9] = 7
    inst[10, 10] = 3  # one pixel: below min_px
    t = patch_targets(inst, 4)
    assert t["boxes"].tolist() == [[3.0, 2.0, 9.0, 5.0]]
    assert t["masks"].shape == (1, 16, 16) and int(t["masks"].sum()) == 18 and t["labels"].tolist() == [1]


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("channels", [4, 26])
def test_model_forward_backward_and_eval(channels):
    torch.manual_seed(0)
    net = build_mask_rcnn(channels, [0.1] * channels, [0.2] * channels, input_size=64)
    assert net.backbone.body.conv1.in_channels == channels
    assert net.transform.image_mean == [0.1] * channels
    net.train()
    inst = np.zeros((32, 32), dtype=np.int32)
    inst[4:14, 4:12], inst[18:28, 16:30] = 1, 2
    losses = net([torch.rand(channels, 32, 32)], [patch_targets(inst, 4)])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(
        losses
    )
    sum(losses.values()).backward()
    assert net.backbone.body.conv1.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        out = net([torch.rand(channels, 32, 32)])[0]
    assert out["masks"].shape[1:] == (1, 32, 32) and out["scores"].shape == out["labels"].shape


# ----------------------------------------------------------------------------- round trip


@pytest.fixture
def tiny_tile(tmp_path):
    """A 48 x 40 px features.tif (2 dates, B02 B03 B04 B08 NDVI) with bright fields and a split of 6
    fields."""
    h, w = 48, 40
    transform = from_origin(500000, 4800000, 10, 10)
    rng = np.random.default_rng(0)
    fields = [
        (2, 2, 10, 12),
        (2, 16, 12, 26),
        (16, 4, 26, 14),
        (30, 2, 44, 12),
        (18, 20, 30, 36),
        (34, 20, 44, 34),
    ]
    ndvi = np.full((h, w), 0.1, dtype=np.float32)
    for r0, c0, r1, c1 in fields:
        ndvi[r0:r1, c0:c1] = 0.8
    bands, names = [], []
    for d in ("20180602", "20180702"):
        for b in ("B02", "B03", "B04", "B08"):
            bands.append(0.1 + 0.2 * ndvi + 0.01 * rng.standard_normal((h, w)).astype(np.float32))
            names.append(f"{d}_{b}")
    for d in ("20180602", "20180702"):
        bands.append(ndvi.copy())
        names.append(f"{d}_NDVI")
    feat = tmp_path / "features.tif"
    with rasterio.open(
        feat,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=len(bands),
        dtype="float32",
        crs="EPSG:32631",
        transform=transform,
        nodata=-9999.0,
    ) as dst:
        dst.write(np.stack(bands))
        dst.descriptions = tuple(names)
    geoms = [
        box(500000 + c0 * 10, 4800000 - r1 * 10, 500000 + c1 * 10, 4800000 - r0 * 10)
        for r0, c0, r1, c1 in fields
    ]
    split = gpd.GeoDataFrame(
        {"polygon_id": range(1, 7), "code": 1, "split": ["learn"] * 4 + ["validation"] * 2},
        geometry=geoms,
        crs="EPSG:32631",
    )
    split_path = tmp_path / "split.gpkg"
    pyogrio.write_dataframe(split, split_path)
    return feat, split_path


def test_train_predict_evaluate_round_trip(tiny_tile, tmp_path):
    feat, split = tiny_tile
    settings = {"steps": 2, "batch_size": 2, "patch_size": 32, "upscale": 1, "n_stats_patches": 4}
    metrics = train_delineation([feat], [split], "bgr_ndvi", settings, tmp_path / "model", seed=3)
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["channels"] == ["20180702_B02", "20180702_B03", "20180702_B04", "20180702_NDVI"]
    assert meta["n_learning_parcels"] == 4 and meta["seed"] == 3 and len(meta["image_mean"]) == 4
    assert metrics["steps"] == 2 and len(metrics["loss_curve"]) == 2
    out = tmp_path / "T.gpkg"
    gdf = predict_delineation(tmp_path / "model", feat, out, {"window": 32, "overlap": 8, "min_score": 0.0})
    assert pyogrio.list_layers(out)[0][0] == "fields"
    back = gpd.read_file(out)
    assert list(back.columns) == ["score", "area_ha", "n_pieces", "geometry"] and len(back) == len(gdf)
    assert back.crs.to_epsg() == 32631 and back.geometry.is_valid.all()
    assert ((back["score"] >= 0) & (back["score"] <= 1)).all()
    files = [tmp_path / f"r.{ext}" for ext in ("json", "csv", "png")] + [tmp_path / "t.csv"]
    rep = evaluate_instances(out, split, *files, name="bgr_ndvi", tile="T", run=0)
    assert rep["n_targets"] == 2 and set(rep["pairs"]) == {"conf0.8_rc0.8", "conf0.7_rc0.5"}
    curves = pd.read_csv(files[1])
    assert len(curves) == 19 * 9 and curves["f1"].between(0, 1).all()
    assert len(pd.read_csv(files[3])) == 2
    summary = summarize_delineation(
        [files[0]], [tmp_path / "model" / "metrics.json"], tmp_path / "s.csv", tmp_path / "s.html"
    )
    assert (
        set(summary["pair"]) == {"conf0.8_rc0.8", "conf0.7_rc0.5"}
        and (summary["training_time_s_mean"] > 0).all()
    )


def test_baseline_polygons_without_score_count_as_confident(tiny_tile, tmp_path):
    _, split = tiny_tile
    val = gpd.read_file(split)
    val = val[val["split"] == "validation"]
    pred = gpd.GeoDataFrame(
        {"code": [1]}, geometry=[shapely.union_all(list(val.geometry))], crs=val.crs
    )  # one merged polygon
    path = tmp_path / "v.gpkg"
    pyogrio.write_dataframe(pred, path)
    files = [tmp_path / f"r.{ext}" for ext in ("json", "csv", "png")] + [tmp_path / "t.csv"]
    rep = evaluate_instances(path, split, *files, name="baseline_rf", tile="T", run=0, kind="vectorized_map")
    high, low = rep["pairs"]["conf0.8_rc0.8"], rep["pairs"]["conf0.7_rc0.5"]
    # the two fields (192 and 140 px) merged into one polygon of 332 px: RC 0.58 and 0.42
    assert high["n_predictions"] == 1 and high["n_matches"] == 0
    assert low["n_matches"] == 1 and low["precision"] == 1 and low["recall"] == 0.5
    assert low["agglomeration_rate"] == 1 and low["agglomerated_target_rate"] == 1


def test_labelled_share_of_boxes():
    lab = torch.zeros(8, 8, dtype=torch.bool)
    lab[:4, :4] = True
    boxes = torch.tensor(
        [[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 4.0, 4.0], [8.0, 8.0, 16.0, 16.0], [20.0, 20.0, 30.0, 30.0]]
    )
    share = labelled_share(boxes, lab, scale=2.0)  # boxes in model px = 2 x patch px
    assert share.tolist() == pytest.approx([0.25, 1.0, 0.0, 0.0])


def test_ignoring_unlabelled_land_turns_its_negatives_into_ignored_examples():
    torch.manual_seed(0)
    net = build_mask_rcnn(4, [0.0] * 4, [1.0] * 4, input_size=64, ignore_unlabelled=True, min_labelled=0.5)
    assert isinstance(net.rpn, IgnoringRPN)
    inst = np.zeros((32, 32), dtype=np.int32)
    inst[2:12, 2:12] = 1  # the labelled land is the top-left corner
    target = patch_targets(inst, 4, scale=2.0)
    scaled = {**target, "boxes": target["boxes"] * 2}  # as the model's transform passes them to the RPN
    anchors = torch.tensor([[4.0, 4.0, 24.0, 24.0], [40.0, 40.0, 60.0, 60.0], [8.0, 8.0, 16.0, 16.0]])
    labels, _ = net.rpn.assign_targets_to_anchors([anchors], [scaled])
    # the field's own box is positive; a box on unknown land is ignored; a misplaced box on the field
    # stays negative
    assert labels[0].tolist() == [1.0, -1.0, 0.0]
    net.train()
    losses = net([torch.rand(4, 32, 32)], [target])
    sum(losses.values()).backward()
    plain = build_mask_rcnn(4, [0.0] * 4, [1.0] * 4, input_size=64)
    assert plain.rpn.assign_targets_to_anchors([anchors], [scaled])[0][0].tolist() == [1.0, 0.0, 0.0]
