"""cropchain: Sentinel-2 image time series + reference parcels -> crop-type maps.

An iota2-style production chain: ingest, gap filling, features, reference fusion,
learning/validation split, samples, training, tiled inference, vectorization, reports.
Each stage is a module; `workflow/rules/*.smk` calls them through `scripts/`.
"""

__version__ = "0.1.0"
