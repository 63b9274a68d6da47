"""cropchain: Sentinel-2 image time series + reference parcels -> crop-type maps.

An iota2-style production chain. The package is laid out like the chain; a module imports
only from its own stage, an earlier one, or the shared bottom layer:

- bottom layer: ``errors``, ``log``, ``nomenclature``, ``metrics``, ``provenance``,
  ``io`` (windowed raster reading, atomic outputs, map products);
- ``sources``: stage 1, ingest of the tile sources (SAFE, Theia, GeoTIFF stacks);
- ``series``: stage 2, gap filling, monthly composites, spectral features;
- ``reference``: stages 3-4, reference fusion and the learning/validation split;
- ``models``: the architectures (one per file, one registry);
- ``learning``: stages 5-6, samples, patches, Presto embeddings, training;
- ``mapping``: stages 7-8, tiled inference, smoothing, vectorization;
- ``assessment``: stage 9, accuracy, Olofsson area estimates, reports;
- ``parcels`` and ``delineation``: the parcel classifiers and Mask R-CNN field delineation;
- ``config``: the configuration schema's validator, which knows every stage's keys and architectures;
- ``workflow``: what the Snakemake rules call (``workflow/rules/*.smk`` -> ``scripts/``);
- ``demo``: the embedded demo tiles.
"""

__version__ = "0.1.0"
