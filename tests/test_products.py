"""Map products: Cloud Optimized GeoTIFF with overviews, GDAL raster attribute table, QGIS style."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from cropchain.io.products import style_paths, write_class_map_cog, write_cog
from cropchain.io.raster import geotiff_profile
from cropchain.nomenclature import Nomenclature

NOMENCLATURE = Nomenclature(
    codes=(1, 2, 7),
    names=("Wheat & barley", "Maize <grain>", "Vineyards"),
    colors=((230, 197, 71), (240, 120, 20), (128, 0, 128)),
)


def _class_map(path, size=1100):
    """A tiled (not COG) class map with a color table, larger than two COG blocks."""
    rng = np.random.default_rng(0)
    codes = np.array([0, 1, 2, 7], dtype=np.uint8)
    data = codes[rng.integers(0, 4, size=(size // 50, size // 50))].repeat(50, 0).repeat(50, 1)[:size, :size]
    base = {
        "crs": "EPSG:32631",
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": size,
        "height": size,
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write_colormap(1, NOMENCLATURE.color_table())
        dst.write(data, 1)
    return data


def test_class_map_cog_with_overviews_rat_and_qml(tmp_path):
    data = _class_map(tmp_path / "tiled.tif")
    out = tmp_path / "T31TEJ_classification.tif"
    write_class_map_cog(tmp_path / "tiled.tif", out, NOMENCLATURE)

    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), data)  # same pixels
        assert src.overviews(1) == [2, 4]  # 1100 px -> 550 -> 275 (< one 512 px block)
        assert src.block_shapes[0] == (512, 512)
        assert src.colormap(1)[7][:3] == (128, 0, 128)
        ov = src.read(1, out_shape=(275, 275))
        assert set(np.unique(ov)) <= {0, 1, 2, 7}  # overviews by mode: class codes, never averages

    aux, qml = style_paths(out)
    assert aux.name == "T31TEJ_classification.tif.aux.xml" and qml.name == "T31TEJ_classification.qml"
    entries = ET.parse(qml).getroot().findall(".//colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label"), e.get("color")) for e in entries] == [
        (1, "Wheat & barley", "#e6c547"),
        (2, "Maize <grain>", "#f07814"),
        (7, "Vineyards", "#800080"),
    ]
    assert not list(tmp_path.glob(".*"))  # no temporaries left


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_gdal_reads_the_class_names(tmp_path):
    """GDAL itself (what QGIS and OTB use) reads the raster attribute table beside the COG."""
    _class_map(tmp_path / "tiled.tif", size=300)
    out = tmp_path / "map.tif"
    write_class_map_cog(tmp_path / "tiled.tif", out, NOMENCLATURE)
    info = json.loads(
        subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True, check=True).stdout
    )
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    rat = info["rat"]  # the RAT of band 1 (gdalinfo -json puts it at the top level)
    names = [f["name"] for f in rat["fieldDefn"]]
    assert names == ["Value", "Class", "Red", "Green", "Blue", "Alpha"]
    rows = [r["f"] for r in rat["row"]]
    assert [(r[0], r[1]) for r in rows] == list(zip(NOMENCLATURE.codes, NOMENCLATURE.names))
    assert rows[2][2:5] == [128, 0, 128]


def test_continuous_cog_overviews_average(tmp_path):
    base = {
        "crs": "EPSG:32631",
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": 1024,
        "height": 1024,
    }
    src = tmp_path / "conf.tif"
    values = np.tile(np.array([0, 100], dtype=np.uint8), (1024, 512))  # alternating columns
    with rasterio.open(src, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=255)) as dst:
        dst.write(values, 1)
    write_cog(src, tmp_path / "confidence.tif", overview_resampling="average")
    with rasterio.open(tmp_path / "confidence.tif") as ds:
        assert ds.overviews(1) == [2]
        assert np.all(ds.read(1, out_shape=(512, 512)) == 50)  # averaged, not picked
