"""Stages 3-4, reference data: fusion of the reference sources on a tile (``fusion``) and the
learning/validation split of its polygons (``split``)."""
