"""Stage 2, series: the date grid, temporal gap filling (OTB ``ImageTimeSeriesGapFilling``), monthly composites and the spectral features computed from the gap-filled series."""
