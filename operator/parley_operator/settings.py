"""The operator's own settings, read from its environment (the Helm chart sets them)."""

from __future__ import annotations

import os

from parley_operator.api.types import OPERATOR_IMAGES

IMAGE_VARIABLES = {c: f"PARLEY_OPERATOR_{c.upper()}_IMAGE" for c in OPERATOR_IMAGES}


def default_images() -> dict[str, str]:
    """component → the image of a spec that names none, where the installation chose one."""
    return {c: image for c, name in IMAGE_VARIABLES.items() if (image := os.environ.get(name))}
