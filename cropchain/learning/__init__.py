"""Stages 5-6, learning: pixel samples, network patches, Presto embeddings and the training of every pixel architecture."""
