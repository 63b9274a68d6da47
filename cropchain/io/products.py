"""Map products as users open them: Cloud Optimized GeoTIFF, raster attribute table, QGIS style.

Every raster a user looks at (classification, confidence, validity, mosaics) is written as a
Cloud Optimized GeoTIFF (GDAL's ``COG`` driver: 512 px tiles, internal overviews, DEFLATE), so
that QGIS opens a whole-tile map at once. A classification map also gets, beside it:

* ``<name>.tif.aux.xml``: a GDAL raster attribute table (GDAL's PAM sidecar, where GDAL keeps
  the RAT of a GeoTIFF): one row per nomenclature class with ``Value``, ``Class`` (name) and
  ``Red``/``Green``/``Blue``/``Alpha``, read by ``gdalinfo``, QGIS (>= 3.30) and OTB;
* ``<name>.qml``: a QGIS paletted-renderer style with the class names and colours, which QGIS
  loads by itself when the raster is added, so the legend shows names, not codes.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.sax.saxutils import quoteattr

import rasterio
import rasterio.shutil

from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.nomenclature import NODATA_CLASS, Nomenclature

#: tile size of the COGs (GDAL's default for the COG driver)
COG_BLOCK = 512

# GDAL raster attribute table field types and usages (gdal.h: GDALRATFieldType, GDALRATFieldUsage)
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_GENERIC, _GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE, _GFU_ALPHA = 0, 2, 5, 6, 7, 8, 9


def write_cog(
    src: str | os.PathLike, out: str | os.PathLike, *, overview_resampling: str = "nearest"
) -> None:
    """Copy a raster into a Cloud Optimized GeoTIFF, written atomically.

    Parameters
    ----------
    src : any raster GDAL reads (a tiled GeoTIFF written by window); its color table, band
        descriptions, nodata and metadata are kept.
    out : the COG (512 px tiles, DEFLATE with horizontal predictor for integers, internal
        overviews down to 512 px, BigTIFF when needed).
    overview_resampling : GDAL resampling of the overviews: ``"mode"`` or ``"nearest"`` for
        class maps, ``"average"`` for continuous values (confidence).

    GDAL streams the copy: memory is bounded by its block cache, not by the raster.
    """
    with atomic_output(out) as tmp:
        rasterio.shutil.copy(
            src,
            tmp,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR="YES",
            BLOCKSIZE=COG_BLOCK,
            OVERVIEW_RESAMPLING=overview_resampling.upper(),
            BIGTIFF="IF_SAFER",
        )


def rat_xml(nomenclature: Nomenclature) -> str:
    """GDAL PAM XML holding the raster attribute table of a class map (band 1)."""
    fields = [
        ("Value", _GFT_INTEGER, _GFU_MINMAX),
        ("Class", _GFT_STRING, _GFU_NAME),
        ("Red", _GFT_INTEGER, _GFU_RED),
        ("Green", _GFT_INTEGER, _GFU_GREEN),
        ("Blue", _GFT_INTEGER, _GFU_BLUE),
        ("Alpha", _GFT_INTEGER, _GFU_ALPHA),
    ]
    lines = [
        "<PAMDataset>",
        '  <PAMRasterBand band="1">',
        '    <GDALRasterAttributeTable tableType="thematic">',
    ]
    for i, (name, ftype, usage) in enumerate(fields):
        lines.append(
            f'      <FieldDefn index="{i}"><Name>{name}</Name>'
            f"<Type>{ftype}</Type><Usage>{usage}</Usage></FieldDefn>"
        )
    for row, (code, name, rgb) in enumerate(zip(nomenclature.codes, nomenclature.names, nomenclature.colors)):
        values = [str(code), _escape(name), *map(str, rgb), "255"]
        lines.append(f'      <Row index="{row}">' + "".join(f"<F>{v}</F>" for v in values) + "</Row>")
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)


def qml_style(nomenclature: Nomenclature) -> str:
    """QGIS style (``.qml``) of a class map: paletted renderer, one entry per class with its name."""
    entries = "\n".join(
        f'        <paletteEntry value="{code}" color="#{r:02x}{g:02x}{b:02x}" alpha="255"'
        f" label={quoteattr(name)}/>"
        for code, name, (r, g, b) in zip(nomenclature.codes, nomenclature.names, nomenclature.colors)
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" \
zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency>
        <singleValuePixelList>
          <pixelListEntry min="{NODATA_CLASS}" max="{NODATA_CLASS}" percentTransparent="100"/>
        </singleValuePixelList>
      </rasterTransparency>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" colorizeOn="0"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def style_paths(raster: str | os.PathLike) -> tuple[Path, Path]:
    """The RAT sidecar (``<name>.tif.aux.xml``) and QGIS style (``<name>.qml``) of a class map."""
    raster = Path(raster)
    return raster.with_name(raster.name + ".aux.xml"), raster.with_suffix(".qml")


def write_class_styles(raster: str | os.PathLike, nomenclature: Nomenclature) -> None:
    """Write the raster attribute table and the QGIS style of a class map beside it (atomically)."""
    aux, qml = style_paths(raster)
    write_text_atomic(aux, rat_xml(nomenclature))
    write_text_atomic(qml, qml_style(nomenclature))


def write_class_map_cog(src: str | os.PathLike, out: str | os.PathLike, nomenclature: Nomenclature) -> None:
    """A class map as a COG (overviews by mode) with its RAT and QGIS style beside it.

    The styles are written first, the map last: a map under its final name always has them.
    """
    write_class_styles(out, nomenclature)
    write_cog(src, out, overview_resampling="mode")
