"""Provenance: checksums of files and SAFE folders, STAC Items."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import rasterio
from rasterio.transform import from_origin

from cropchain.io.raster import geotiff_profile
from cropchain.provenance import checksum, input_manifest, write_stac_item


def _raster(path):
    base = {"crs": "EPSG:32631", "transform": from_origin(500000, 4800000, 10, 10), "width": 20, "height": 10}
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(np.arange(200, dtype=np.uint8).reshape(1, 10, 20))


def test_folder_checksum_sees_every_file(tmp_path):
    safe = tmp_path / "P.SAFE"
    (safe / "GRANULE").mkdir(parents=True)
    (safe / "MTD_MSIL2A.xml").write_text("<a/>")
    (safe / "GRANULE" / "B02.jp2").write_bytes(b"\x00\x01")
    first = checksum(safe)
    assert first["files"] == 2 and first["bytes"] == 6
    (safe / "GRANULE" / "B02.jp2").write_bytes(b"\x00\x02")
    assert checksum(safe)["sha256"] != first["sha256"]
    shutil.copytree(safe, tmp_path / "Q.SAFE")
    assert checksum(tmp_path / "Q.SAFE")["sha256"] == checksum(safe)["sha256"]


def test_stac_item(tmp_path):
    _raster(tmp_path / "T_classification.tif")
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "dates.txt").write_text("20180123\n20180202\n")
    (tmp_path / "ref.gpkg").write_bytes(b"ref")
    safe = tmp_path / "P.SAFE"
    safe.mkdir()
    (safe / "MTD_MSIL2A.xml").write_text("<a/>")
    input_manifest([safe], tmp_path / "inputs.json")
    item = write_stac_item(
        tmp_path / "out" / "item.json",
        item_id="T-rf-run1",
        assets={"classification": tmp_path / "T_classification.tif", "report": tmp_path / "report.json"},
        dates_file=tmp_path / "dates.txt",
        config={"split": {"seed": 5}},
        run=1,
        seed=6,
        architecture="rf",
        tile="T",
        input_products=tmp_path / "inputs.json",
        reference_files=[tmp_path / "ref.gpkg"],
    )
    saved = json.loads((tmp_path / "out" / "item.json").read_text())
    assert saved == item
    assert saved["type"] == "Feature" and saved["stac_version"] == "1.0.0"
    props = saved["properties"]
    assert props["cropchain:seed"] == 6 and props["cropchain:run"] == 1
    assert props["start_datetime"].startswith("2018-01-23") and props["end_datetime"].startswith("2018-02-02")
    assert props["cropchain:reference_files"][0]["sha256"] == hashlib.sha256(b"ref").hexdigest()
    assert props["cropchain:input_products"][0]["files"] == 1
    assert {"cropchain", "rasterio", "gdal", "scikit-learn"} <= set(props["cropchain:versions"])
    asset = saved["assets"]["classification"]
    assert asset["href"] == "../T_classification.tif"
    digest = hashlib.sha256((tmp_path / "T_classification.tif").read_bytes()).hexdigest()
    assert asset["file:checksum"] == "1220" + digest
    west, south, east, north = saved["bbox"]
    assert 2.9 < west < east < 3.1 and 43.2 < south < north < 43.4  # UTM 31N near 500000 E
