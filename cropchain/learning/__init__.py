"""Stages 5-6, learning.

Pixel samples, network patches, Presto embeddings and the training of every pixel architecture.
"""
