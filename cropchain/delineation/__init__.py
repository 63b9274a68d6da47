"""Field delineation with Mask R-CNN (CESBIO study).

Patches, training and windowed prediction (``fields``) and instance scores (``metrics``).
"""
