"""deploycheck: deploy a Docker Compose stack through pytest stage fixtures, check it, roll back on failure.

The plugin is ``deploycheck.plugin``; checks use ``deploycheck.stack.Stack`` (the ``stack`` fixture).
"""

from __future__ import annotations

from pathlib import Path

# The built-in fixtures and checks are ``deploycheck.fixtures`` and ``deploycheck.checks``: installed, they are
# folders of this package; in the suite repository they are the folders beside plugins/ (its fixed layout).
_suite = Path(__file__).resolve().parents[2]
if not (Path(__file__).parent / "fixtures").is_dir() and (_suite / "fixtures" / "stages.py").is_file():
    __path__.append(str(_suite))
