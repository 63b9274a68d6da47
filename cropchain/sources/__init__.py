"""Stage 1, ingest: readers of the tile sources (Sentinel-2 L2A SAFE, Theia/MAJA, per-date GeoTIFF stacks) into a tile's raw reflectance series and clear-sky mask."""
