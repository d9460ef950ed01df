"""Where charops keeps the models it fetches or imports: ``$CHAROPS_CACHE/models``
(default ``~/.cache/charops/models``). A leaf module: the loaders and the catalog both use it.

    python -c "from charops.model.cache import default_cache_dir; print(default_cache_dir())"
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHAROPS_CACHE", Path.home() / ".cache" / "charops")) / "models"
