"""The scoring weights ``w = (w_c, w_h, w_1..w_n)`` and the versioned file that holds them.

The file is JSON::

    {"version": "...", "w_c": 0.01, "w_h": 1.0, "jurors": {"name": 0.33, ...},
     "default_juror_weight": 0.33, "source": "what data it was fitted on, or 'hand-set'"}

A juror not named in ``jurors`` gets ``default_juror_weight``. An optional ``"kinds"`` object
holds weights per job kind (``{"coding": {"w_c": ..., "w_h": ..., "jurors": ...}, ...}``, each
with the same keys and its own ``source``), fitted on that kind's auctions; a job of a kind
listed there is scored with them when they name every agent of the pool, any other with the
top-level weights (:meth:`Weights.for_kind`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from sale.models.schemas import Kind

from sale.errors import InputError, WeightsError
from sale.inputs import LIMITS, decode, parse_json, read

_KEYS = {"version", "w_c", "w_h", "jurors", "default_juror_weight", "source", "fitted_on", "kinds"}


@dataclass(frozen=True)
class Weights:
    """Scoring weights as loaded from a weights file."""

    version: str
    w_c: float
    w_h: float
    jurors: dict[str, float] = field(default_factory=dict)
    default_juror_weight: float = 1.0
    source: str = ""
    path: str = ""
    kinds: dict[str, Weights] = field(default_factory=dict)

    def for_kind(self, kind: str, jurors: Sequence[str] | None = None) -> Weights:
        """The weights a job of this kind is scored with: its own section, else these. A section
        is fitted on one pool: it applies only when it names every juror in ``jurors`` (the
        pool's agents), so weights fitted for another pool never silently weigh a juror by its
        default."""
        section = self.kinds.get(kind)
        if section is None or (jurors is not None and not set(jurors) <= set(section.jurors)):
            return self
        return section

    def juror(self, name: str) -> float:
        """The weight of juror ``name``."""
        return self.jurors.get(name, self.default_juror_weight)

    def juror_weights(self, names: list[str]) -> dict[str, float]:
        """Weights for the given jurors."""
        return {n: self.juror(n) for n in names}


def _number(path: str, data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightsError(path, f"{key!r} must be a number, got {_short(value)}")
    if not math.isfinite(value):
        raise WeightsError(path, f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_weights(text: str, path: str = "<weights>") -> Weights:
    """Validate weights JSON text."""
    try:
        data = parse_json(decode(text, path, LIMITS["weights"]), path)
    except InputError as exc:
        raise WeightsError(path, exc.problem) from exc
    if not isinstance(data, dict):
        raise WeightsError(path, "must be a JSON object")
    return _parse(data, path)


def _parse(data: dict[str, Any], path: str, parent: str | None = None) -> Weights:
    """One weights object: the file's top level, or (``parent`` = its version) a kind's section,
    which may not nest kinds and takes the top level's version unless it names its own."""
    allowed = _KEYS if parent is None else _KEYS - {"kinds"}
    unknown = set(data) - allowed
    if unknown:
        raise WeightsError(path, f"unknown key(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    version = data.get("version", parent)
    if not isinstance(version, str) or not version:
        raise WeightsError(path, "'version' must be a non-empty string")
    jurors = data.get("jurors", {})
    if not isinstance(jurors, dict):
        raise WeightsError(path, "'jurors' must be an object of juror name -> weight")
    parsed_jurors = {}
    for name, w in jurors.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise WeightsError(
                path, f"juror {_short(name)}: weight must be a number, got {_short(w)}"
            )
        if not math.isfinite(w):
            raise WeightsError(path, f"juror {_short(name)}: weight must be finite, got {w!r}")
        parsed_jurors[name] = float(w)
    default = data.get("default_juror_weight", 1.0)
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise WeightsError(path, "'default_juror_weight' must be a number")
    if not math.isfinite(default):
        raise WeightsError(path, "'default_juror_weight' must be a finite number")
    kinds = data.get("kinds", {})
    if not isinstance(kinds, dict) or not all(isinstance(v, dict) for v in kinds.values()):
        raise WeightsError(path, "'kinds' must be an object of job kind -> weights object")
    known = get_args(Kind)
    if set(kinds) - set(known):
        raise WeightsError(
            path, f"'kinds' names {sorted(set(kinds) - set(known))}; job kinds are {list(known)}"
        )
    return Weights(
        version=version,
        w_c=_number(path, data, "w_c"),
        w_h=_number(path, data, "w_h"),
        jurors=parsed_jurors,
        default_juror_weight=float(default),
        source=str(data.get("source", "")),
        path=path,
        kinds={k: _parse(v, f"{path} (kinds.{k})", version) for k, v in kinds.items()},
    )


def handset_weights_path() -> Path:
    """The packaged hand-set weights (each juror 1/3, ``w_c`` 0.01): the default before a fit
    was shipped, kept so the jury levers can be measured where the jury has weight."""
    return Path(str(resources.files("sale.workers.auction") / "weights" / "handset.json"))


def load_weights(path: Path | None) -> Weights:
    """Load a weights file; ``None`` loads the packaged default weights."""
    if path is None:
        ref = resources.files("sale.workers.auction") / "weights" / "default.json"
        return parse_weights(
            ref.read_text(encoding="utf-8"), "workers/auction/weights/default.json"
        )
    if not path.exists():
        raise WeightsError(str(path), "file not found; set SALE_WEIGHTS_FILE or run `sale fit`")
    try:
        text = read(path, str(path), LIMITS["weights"])
    except InputError as exc:
        raise WeightsError(str(path), exc.problem) from exc
    return parse_weights(text, str(path))
