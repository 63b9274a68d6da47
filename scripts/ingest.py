"""Rule ingest: the images of a tile (SAFE, Theia, GeoTIFF stacks) -> raw.tif, raw_mask.tif, raw_dates.txt."""

from cropchain.sources.sentinel2 import find_safe_products, ingest_safe, tile_id_of_name
from cropchain.sources.stack import (
    DEFAULT_DATE_FORMAT,
    DEFAULT_DATE_PATTERN,
    DEFAULT_FILES,
    find_stack_files,
    ingest_stack,
    ingest_stack_file,
)
from cropchain.sources.theia import DEFAULT_CLM_BITS, find_theia_products, ingest_theia
from cropchain.workflow import run_step


def main(smk):
    cfg, spec, tile = smk.params.ingest, smk.params.source, smk.wildcards.tile
    out = (smk.output.raw, smk.output.mask, smk.output.dates)
    source = spec["source"]
    # A tile named like an MGRS id (T31TEJ) must get products of that tile; other names are free.
    expected = tile if tile_id_of_name(tile) else None
    if source in ("safe", "demo"):
        ingest_safe(
            find_safe_products(list(smk.input.products)),
            *out,
            bands=cfg["bands"],
            scl_masked_classes=smk.params.scl_masked,
            resampling=cfg["resampling"],
            tile=expected,
            same_date=cfg.get("same_date", "error"),
        )
    elif source == "theia":
        ingest_theia(
            find_theia_products(list(smk.input.products)),
            *out,
            bands=cfg["bands"],
            clm_bits=spec.get("clm_bits", DEFAULT_CLM_BITS),
            resampling=cfg["resampling"],
            tile=expected,
        )
    else:
        values = {
            "file_bands": spec.get("bands"),
            "nodata": spec.get("nodata"),
            "scale": spec.get("scale", 1.0),
            "offset": spec.get("offset", 0.0),
            "tile": tile,
        }
        if source == "stack":
            dates = find_stack_files(
                spec["products"],
                files=spec.get("files", DEFAULT_FILES),
                masks=spec.get("masks"),
                date_pattern=spec.get("date_pattern", DEFAULT_DATE_PATTERN),
                date_format=spec.get("date_format", DEFAULT_DATE_FORMAT),
            )
            ingest_stack(dates, *out, bands=cfg["bands"], **values)
        else:
            ingest_stack_file(
                spec["file"],
                spec["dates_file"],
                *out,
                bands=cfg["bands"],
                mask_file=spec.get("mask_file"),
                **values,
            )


run_step(snakemake, main)  # noqa: F821
