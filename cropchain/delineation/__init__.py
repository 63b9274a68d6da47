"""Field delineation with Mask R-CNN (CESBIO study): patches, training and windowed prediction
(``fields``) and instance scores (``metrics``)."""
