"""Input/output: Sentinel-2 readers, GeoTIFF writing, atomic outputs."""
