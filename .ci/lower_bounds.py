"""Print a pip constraints file pinning every dependency to the lowest version pyproject.toml
declares (`name>=X` -> `name==X`), so CI can test the lower bounds as well as the newest."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())[
    "project"
]
requirements = project["dependencies"]  # the test tools themselves stay at their newest
for requirement in requirements:
    match = re.match(r"\s*([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)", requirement)
    if match:
        print(f"{match[1]}=={match[3]}")
