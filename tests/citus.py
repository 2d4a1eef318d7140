"""The Citus image the project's tests run: the one the environments' citus_image resolves to on this engine,
through deploycheck's own mechanism (the official image where it can be had; else real Citus built from the
source release in $DEPLOYCHECK_CITUS_SOURCE, once per engine)."""

from __future__ import annotations

import os
from pathlib import Path

import docker

from deploycheck.engine import citus
from deploycheck.engine.commands import Runner

ROOT = Path(__file__).resolve().parents[1]
CITUS_IMAGE = "citusdata/citus:13.2"  # the environments' (stack/compose.yaml runs it as CITUS_IMAGE)


def resolved_citus_image() -> str:
    remembered = citus.Remembered(ROOT / ".deploycheck" / "images.json")
    source = citus.source_from(None, dict(os.environ))
    return citus.resolve(docker.from_env(), Runner(), CITUS_IMAGE, source, remembered).reference
