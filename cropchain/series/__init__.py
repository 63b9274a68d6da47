"""Stage 2, series: from a tile's raw time series to the gap-filled series and its features.

* :mod:`~cropchain.series.dates`: configured dates, the regular date grid, days since an origin;
* :mod:`~cropchain.series.tile`: what gap filling and compositing share on a tile (the ingest's
  contract, the coverage checks, the ``gapfilled.tif`` / ``validity.tif`` / ``dates.txt`` products);
* :mod:`~cropchain.series.gapfill`: temporal gap filling (OTB ``ImageTimeSeriesGapFilling``);
* :mod:`~cropchain.series.composite`: monthly median composites;
* :mod:`~cropchain.series.temporal`: the temporal step, one or the other (``gapfill.temporal``);
* :mod:`~cropchain.series.features`: the spectral features computed from the gap-filled series.
"""
