"""Stage list_ssv2 / list_deepcad: the listing of a dataset root (path, size, mtime of every file).

    python -m stages.list_source {ssv2,deepcad} [--params params.yaml]

Reads section ``ssv2`` or ``deepcad`` (root, listing) and writes the listing of ``root`` to ``listing``
(lib.listing). DVC runs it on every ``dvc repro`` (``always_changed``) and the fan-out stage depends on the listing
rather than on the root's 220k files, so a no-op ``dvc repro`` is seconds at the real datasets' sizes; the fan-out
reruns exactly when a file under the root is added, removed, rewritten or touched.
"""
from __future__ import annotations

import logging

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.deepcad.layout import DeepCADSource
from lib.listing import write_listing
from lib.ssv2.layout import SSv2Source

log = logging.getLogger("list_source")


SOURCES = {"ssv2": SSv2Source, "deepcad": DeepCADSource}


def main() -> None:
    parser = stage_parser("list_source", __doc__)
    parser.add_argument("source", choices=["ssv2", "deepcad"], help="the params section of the dataset root")
    args = parser.parse_args()
    src = load_section(args.params, args.source, SOURCES[args.source])
    result = write_listing(src.root, src.listing)
    log.info("%s: %d file(s), %.1f MiB -> %s (%s)", src.root, result["files"], result["bytes"] / 2**20, src.listing,
             "changed" if result["changed"] else "unchanged")


if __name__ == "__main__":
    run_stage(main)
