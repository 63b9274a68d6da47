# cropchain: Sentinel-2 L2A time series + reference parcels -> crop-type maps.
# Stages (one rule file each): ingest -> gapfill -> reference/split -> samples -> train ->
# classify -> vectorize -> report; optional parcels and delineation. Spectral features are
# computed per window from the gap-filled series wherever they are read (no stored stack).
# See ../shared/DESIGN.md.
#
#   snakemake --cores 2                                  # the embedded demo
#   snakemake --cores 2 --configfile config/t31tej.yaml  # real Sentinel-2 data

from snakemake.utils import min_version

min_version("9.0")

# The default config is read only when none is given on the command line, so that
# `--configfile config/t31tej.yaml` replaces the demo instead of merging into it.
if not config:
    # Snakemake reports a YAML syntax error without file or line: read it first to name both.
    from cropchain.config import read_yaml

    read_yaml("config/config.yaml")

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/gapfill.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/presto.smk"
include: "workflow/rules/vectorize.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/parcels.smk"
include: "workflow/rules/delineation.smk"
include: "workflow/rules/assessment.smk"
include: "workflow/rules/provenance.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
