# Fan-out of per-item work (see ../README.md, "Design"). A table of contents: rules live in rules/.
#   snakemake --cores 8 ingest_ssv2      probe + copy every SSv2 video in shards, then one manifest
#   snakemake -n ingest_ssv2             dry run: which shards would run and why
#   snakemake --cores 8 render_deepcad   DeepCAD JSON -> CAD code, meshes, multi-view PNGs in shards
#   snakemake --profile profiles/slurm render_deepcad   the same on a SLURM cluster
# Reads the same params.yaml as DVC; each section is checked by lib/config before any job starts.
import sys

sys.path.insert(0, workflow.basedir)

configfile: "params.yaml"

PARAMS_FILE = workflow.configfiles[0] if workflow.configfiles else "params.yaml"
__import__("lib.config").config.check_sections(config, PARAMS_FILE)  # unknown/misspelled sections stop here

include: "rules/fanout.smk"
