"""Low-level input/output shared by every stage.

Windowed raster reading (``raster``), atomic outputs (``atomic``) and the published map products
(``products``: COG, raster attribute table, QGIS style).
"""
