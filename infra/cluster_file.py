"""A Ray cluster-launcher file (``ray_cluster.yaml``), loaded and checked as ``ray up`` checks it, without AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_cluster_file(path: str | Path) -> dict[str, Any]:
    """The cluster file as a dict after Ray's own preparation and schema validation (what ``ray up`` runs first);
    raises Ray's error when it is invalid.

    Ray has no public API for this: ``ray.autoscaler._private.util.prepare_config`` / ``validate_config`` are what
    ``ray up`` calls. They are used here and nowhere else, with ray pinned in constraints.txt;
    ``tests/test_cluster_config.py`` fails if they move.
    """
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # "setting max workers for head node type..."
    config = yaml.safe_load(Path(path).read_text())
    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared
