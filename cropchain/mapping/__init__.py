"""Stages 7-8, mapping: tiled inference (classification, confidence, probabilities, smoothing) and
vectorization."""
