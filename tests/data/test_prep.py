"""data_prep/tokenize.py: shards read back by streaming equal the tokenizer's output."""

import gzip
import hashlib
import json
import signal
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm
from streaming import StreamingDataset

from shearing.data import prep
from shearing.data.prep import main
from tests.conftest import write_corpus


def tokenize(args):
    return main([str(a) for a in args])


def read_rows(path):
    ds = StreamingDataset(local=str(path), shuffle=False, batch_size=1)
    return [np.asarray(r["tokens"]) for r in ds]


def encodings(sp_path, texts):
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    return [[1, *ids, 2] for ids in sp.encode(texts)]


def test_rows_equal_the_tokenizer_output(tiny_workspace, tmp_path):
    out = tmp_path / "out"
    args = [
        "--input",
        tiny_workspace["root"] / "corpus",
        "--output",
        out,
        "--tokenizer",
        tiny_workspace["tokenizer"],
        "--seq-len",
        32,
        "--eval-seqs",
        0,
    ]
    assert tokenize(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seq_len"] == 32 and manifest["vocab_size"] == 40
    for domain, texts in tiny_workspace["texts"].items():
        stream = np.concatenate(encodings(tiny_workspace["tokenizer"], texts))
        rows = read_rows(out / "train" / domain)
        assert all(r.dtype == np.uint16 and len(r) == 32 for r in rows)
        assert len(rows) == len(stream) // 32
        assert np.array_equal(np.concatenate(rows), stream[: len(rows) * 32])
        counts = manifest["domains"][domain]["train"]
        assert counts == {"documents": len(texts), "tokens": len(stream), "rows": len(rows)}


def test_eval_rows_come_from_held_out_documents(tiny_workspace):
    manifest = json.loads((tiny_workspace["data"] / "manifest.json").read_text())
    for domain, texts in tiny_workspace["texts"].items():
        enc = encodings(tiny_workspace["tokenizer"], texts)
        counts = manifest["domains"][domain]
        n_eval = counts["eval"]["documents"]
        held = [enc[i] for i in range(0, len(enc), prep.EVAL_STRIDE)][:n_eval]
        train = [
            e
            for i, e in enumerate(enc)
            if not (i % prep.EVAL_STRIDE == 0 and i // prep.EVAL_STRIDE < n_eval)
        ]
        eval_rows = read_rows(tiny_workspace["data"] / "eval" / domain)
        assert len(eval_rows) == 4  # --eval-seqs 4
        assert np.array_equal(np.concatenate(eval_rows), np.concatenate(held)[: 4 * 32])
        train_rows = read_rows(tiny_workspace["data"] / "train" / domain)
        assert np.array_equal(
            np.concatenate(train_rows), np.concatenate(train)[: len(train_rows) * 32]
        )
        assert counts["train"]["documents"] + n_eval == len(texts)


def shard_digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_input_gives_identical_shards_also_with_workers(tiny_workspace, tmp_path):
    base = [
        "--input",
        tiny_workspace["root"] / "corpus",
        "--tokenizer",
        tiny_workspace["tokenizer"],
        "--seq-len",
        32,
        "--eval-seqs",
        4,
    ]
    assert tokenize([*base, "--output", tmp_path / "a"]) == 0
    assert tokenize([*base, "--output", tmp_path / "b", "--workers", 2]) == 0
    assert shard_digest(tmp_path / "a") == shard_digest(tmp_path / "b")
    assert shard_digest(tmp_path / "a") == shard_digest(tiny_workspace["data"])


def test_task_size_does_not_change_the_shards(tiny_workspace, tmp_path, monkeypatch):
    # tasks of a few documents: the held-out split runs across many batches and the
    # workers' queue crosses domain boundaries
    base = [
        "--input",
        tiny_workspace["root"] / "corpus",
        "--tokenizer",
        tiny_workspace["tokenizer"],
    ]
    base += ["--seq-len", 32, "--eval-seqs", 4]
    monkeypatch.setattr(prep, "DOCS_PER_TASK", 3)
    assert tokenize([*base, "--output", tmp_path / "docs", "--workers", 2]) == 0
    monkeypatch.setattr(prep, "DOCS_PER_TASK", 1000)
    monkeypatch.setattr(prep, "CHARS_PER_TASK", 100)
    assert tokenize([*base, "--output", tmp_path / "chars"]) == 0
    assert shard_digest(tmp_path / "docs") == shard_digest(tiny_workspace["data"])
    assert shard_digest(tmp_path / "chars") == shard_digest(tiny_workspace["data"])


def _exit_on_sigterm(signum, frame):
    sys.exit(128 + signum)  # what composer's import installs: SIGTERM raises SystemExit


def test_workers_are_ended_by_sigterm_under_a_handler_that_raises(tiny_workspace):
    """A worker that inherited a SIGTERM handler raising SystemExit can outlive
    `Pool.terminate`, which then waits for it forever (measured: about one terminate in
    500 hung). The workers run with SIGTERM's default action, whatever the caller's."""
    kept = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        tok = prep.Tokenizer(str(tiny_workspace["tokenizer"]))
        with prep.worker_pool(2, tok) as pool:
            said = [pool.apply(signal.getsignal, (signal.SIGTERM,)) for _ in range(4)]
            workers = list(pool._pool)
        assert said == [signal.SIG_DFL] * 4
        assert [w.exitcode for w in workers] == [0, 0]  # done: closed and joined
        assert signal.getsignal(signal.SIGTERM) is _exit_on_sigterm  # the caller's, back

        with pytest.raises(RuntimeError, match="mid-run"):
            with prep.worker_pool(2, tok) as pool:
                workers = list(pool._pool)
                raise RuntimeError("mid-run")
        # terminated: ended by SIGTERM, or by the stop sentinel the pool sends first
        assert all(w.exitcode in (0, -signal.SIGTERM) for w in workers), workers
    finally:
        signal.signal(signal.SIGTERM, kept)


def test_reads_gzip_and_parquet_and_hf_tokenizers(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    texts = [
        "Structured pruning removes whole heads.",
        "Dynamic batch loading re-weights domains.",
    ] * 20
    (tmp_path / "in" / "gz").mkdir(parents=True)
    (tmp_path / "in" / "pq").mkdir(parents=True)
    with gzip.open(tmp_path / "in" / "gz" / "a.json.gz", "wt") as f:
        f.writelines(json.dumps({"text": t, "meta": 1}) + "\n" for t in texts)
    pq.write_table(pa.table({"text": texts}), tmp_path / "in" / "pq" / "a.parquet")
    args = [
        "--input",
        tmp_path / "in",
        "--output",
        tmp_path / "out",
        "--tokenizer",
        smollm2_dir,
        "--seq-len",
        16,
        "--eval-seqs",
        0,
    ]
    assert tokenize(args) == 0
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    stream = np.concatenate([[tok.bos_token_id, *row, tok.eos_token_id] for row in ids])
    for domain in ("gz", "pq"):
        rows = read_rows(tmp_path / "out" / "train" / domain)
        assert np.array_equal(np.concatenate(rows), stream[: len(rows) * 16])


def error_of(args, capsys):
    assert tokenize(args) == 2
    # progress lines (one per domain, off a terminal) may come first; the error is the
    # last line and the only one that says error
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(x.startswith("tokenize [") for x in lines[:-1]), lines
    assert lines[-1].startswith("error: ")
    return lines[-1]


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_workspace, capsys, monkeypatch):
    tok = tiny_workspace["tokenizer"]
    corpus = tmp_path / "c"
    write_corpus(corpus, docs_per_domain=30)
    base = ["--tokenizer", tok, "--seq-len", 32, "--eval-seqs", 1]
    (corpus / "empty").mkdir()
    assert "domain 'empty' has no .jsonl/.jsonl.gz/.json.gz/.parquet files" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", *base], capsys
    )
    (corpus / "empty" / "a.jsonl").write_text("\n")
    assert "domain 'empty' has no text in 1 file(s)" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", *base], capsys
    )
    (corpus / "empty" / "a.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    assert "a.jsonl:1: record has no 'text' field" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", *base], capsys
    )
    (corpus / "empty" / "a.jsonl").unlink()
    (corpus / "empty").rmdir()
    assert "domain 'zeta' has no folder" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", "--domains", "alpha,zeta", *base], capsys
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    assert "is not empty; pass --force" in error_of(
        ["--input", corpus, "--output", tmp_path / "full", *base], capsys
    )
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep"
    assert "is neither a Hugging Face tokenizer directory nor a SentencePiece" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", "--tokenizer", tmp_path / "nope"], capsys
    )
    monkeypatch.setattr(prep.Tokenizer, "ids", lambda self, texts: [[70000] for _ in texts])
    assert "token id 70000 does not fit uint16" in error_of(
        ["--input", corpus, "--output", tmp_path / "o", *base], capsys
    )
    assert not (tmp_path / "o").exists()
