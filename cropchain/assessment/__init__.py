"""Stage 9, assessment: map accuracy against the validation polygons (``evaluate``), Olofsson et al.
(2014) sampling design and area estimation (``olofsson``) and the HTML reports (``report``)."""
