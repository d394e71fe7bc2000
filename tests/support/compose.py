"""docker-compose.yml as Docker reads it, for the tests of the image and of a deployment."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.stack import ROOT


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded
