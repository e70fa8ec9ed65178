"""Tokenize a multi-domain corpus into packed MDS shards, one stream per domain.

The implementation behind `data_prep/tokenize.py`:

    python data_prep/tokenize.py --input DIR --output DIR --tokenizer TOK \
        [--seq-len 4096] [--eval-seqs 500] [--workers N] [--domains a,b,...] [--force]

Input: one sub-folder per domain (RedPajama's layout) of .jsonl, .jsonl.gz, .json.gz or
.parquet files whose records have a `text` field, read as a stream. Tokenizer: a Hugging
Face tokenizer directory or a SentencePiece `.model` file. Every document gets BOS and
EOS; documents are concatenated and packed into rows of `--seq-len` tokens per domain (the
last partial row is dropped). Documents are held out for evaluation (every
`EVAL_STRIDE`-th document, until `--eval-seqs` rows are filled), so eval rows never share
a document with training rows.

Output: `OUT/train/<domain>/` and `OUT/eval/<domain>/` MDS shards (columns `tokens`,
uint16 when the vocabulary fits, else uint32, and `domain`), and `OUT/manifest.json` with
per-domain documents, tokens and rows per split. The same input and arguments give the
same bytes. The output is written to a temporary folder and renamed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from streaming import MDSWriter
from tqdm import tqdm

from shearing import cli
from shearing.files import check_replaceable, check_separate, staged_output

SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".parquet")
EVAL_STRIDE = 10  # every 10th document is held out while eval rows are still needed
DOCS_PER_TASK = 256
SHARD_BYTES = 1 << 26


class TokenizeError(ValueError):
    """Bad input; the message names the file, domain or value."""


# --- reading ------------------------------------------------------------------------


def domain_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))


def read_texts(path: Path) -> Iterator[str]:
    """Yield the `text` of every record of one file, streaming."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise TokenizeError(f"{path}: records have no 'text' column")
        for batch in pf.iter_batches(columns=["text"]):
            for i, text in enumerate(batch.column(0).to_pylist()):
                if text is None:
                    raise TokenizeError(f"{path}: record {i} has no 'text'")
                yield text
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            for n, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TokenizeError(f"{path}:{n}: not JSON ({err.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise TokenizeError(f"{path}:{n}: record has no 'text' field")
                yield record["text"]
    except UnicodeDecodeError as err:
        raise TokenizeError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x})"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise TokenizeError(f"{path}: not a complete gzip file ({err})") from None


# --- tokenizing -----------------------------------------------------------------------


class Tokenizer:
    """A Hugging Face tokenizer directory or a SentencePiece model, batched."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".model":
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(path))
            self.vocab_size = self._sp.get_piece_size()
            self.bos, self.eos = self._sp.bos_id(), self._sp.eos_id()
        elif path.is_dir():
            from transformers import AutoTokenizer

            self._sp = None
            self._hf = AutoTokenizer.from_pretrained(path)
            self.vocab_size = len(self._hf)
            self.bos, self.eos = self._hf.bos_token_id, self._hf.eos_token_id
        else:
            raise TokenizeError(
                f"--tokenizer {spec!r} is neither a Hugging Face tokenizer directory nor a "
                "SentencePiece .model file"
            )
        if self.bos is None or self.bos < 0 or self.eos is None or self.eos < 0:
            raise TokenizeError(f"--tokenizer {spec!r} defines no BOS or EOS token")

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with BOS and EOS."""
        if self._sp is not None:
            ids = self._sp.encode(texts)
        else:
            ids = self._hf(texts, add_special_tokens=False)["input_ids"]
        return [[self.bos, *row, self.eos] for row in ids]


_worker_tokenizer: Tokenizer | None = None


def _init_worker(spec: str) -> None:
    global _worker_tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _worker_tokenizer = Tokenizer(spec)


def _encode_task(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode_with(_worker_tokenizer, texts)


def document_batches(files: list[Path]) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in files:
        for text in read_texts(path):
            batch.append(text)
            if len(batch) == DOCS_PER_TASK:
                yield batch
                batch = []
    if batch:
        yield batch


def bounded_imap(pool, fn, items: Iterator, window: int) -> Iterator:
    """`pool.imap` that keeps at most `window` tasks in flight (bounded memory), in order."""
    pending = []
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.pop(0).get()
    for result in pending:
        yield result.get()


# --- packing --------------------------------------------------------------------------


class Packer:
    """Concatenates documents and writes full rows of `seq_len` tokens to one MDS stream."""

    def __init__(
        self, out: Path, domain: str, seq_len: int, dtype: np.dtype, max_rows: int | None = None
    ) -> None:
        self.writer = MDSWriter(
            out=str(out),
            columns={"tokens": f"ndarray:{np.dtype(dtype).name}", "domain": "str"},
            size_limit=SHARD_BYTES,
        )
        self.domain, self.seq_len, self.dtype, self.max_rows = domain, seq_len, dtype, max_rows
        self.buffer = np.empty(0, dtype=dtype)
        self.documents = self.tokens = self.rows = 0

    def add(self, ids: np.ndarray) -> None:
        self.documents += 1
        self.tokens += len(ids)
        self.buffer = np.concatenate([self.buffer, ids.astype(self.dtype)])
        while len(self.buffer) >= self.seq_len and self.rows != self.max_rows:
            row, self.buffer = self.buffer[: self.seq_len], self.buffer[self.seq_len :]
            self.writer.write({"tokens": np.ascontiguousarray(row), "domain": self.domain})
            self.rows += 1
        if self.rows == self.max_rows:
            self.buffer = self.buffer[:0]  # full: the rest of held-out text is not needed

    def close(self) -> dict:
        self.writer.finish()
        return {"documents": self.documents, "tokens": self.tokens, "rows": self.rows}


def tokenize_domain(
    domain: str, files: list[Path], out: Path, args: TokenizeJob, tok: Tokenizer, pool
) -> dict:
    dtype = np.uint16 if tok.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    limit = np.iinfo(dtype).max
    train = Packer(out / "train" / domain, domain, args.seq_len, dtype)
    held = Packer(out / "eval" / domain, domain, args.seq_len, dtype, max_rows=args.eval_seqs)
    eval_tokens_needed = args.eval_seqs * args.seq_len
    doc_index = 0
    batches = document_batches(files)
    encoded = (
        bounded_imap(pool, _encode_task, batches, window=4 * args.workers)
        if pool is not None
        else (_encode_with(tok, b) for b in batches)
    )
    with tqdm(desc=f"tokenizing {domain}", unit="doc", disable=None) as bar:
        for flat, ends in encoded:
            if flat.max() > limit:
                raise TokenizeError(
                    f"domain {domain!r}: token id {int(flat.max())} does not fit "
                    f"{np.dtype(dtype).name}"
                )
            docs = np.split(flat, ends[:-1])
            for ids in docs:
                to_eval = (
                    doc_index % EVAL_STRIDE == 0
                    and held.tokens < eval_tokens_needed
                    and held.rows < args.eval_seqs
                )
                (held if to_eval else train).add(ids)
                doc_index += 1
            bar.update(len(docs))
    stats = {"train": train.close(), "eval": held.close()}
    if doc_index == 0:
        raise TokenizeError(f"domain {domain!r} has no text in {len(files)} file(s)")
    if stats["train"]["rows"] == 0:
        raise TokenizeError(
            f"domain {domain!r} has {stats['train']['tokens']} training tokens, fewer than one "
            f"row of --seq-len {args.seq_len}"
        )
    if args.eval_seqs > 0 and stats["eval"]["rows"] == 0:
        raise TokenizeError(
            f"domain {domain!r}: its held-out documents fill no eval row of "
            f"--seq-len {args.seq_len}"
        )
    return stats


def _encode_with(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All documents' ids in one array (cheap to send between processes) and their ends."""
    rows = tok.encode(texts)
    ids = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows])
    return ids, np.cumsum([len(row) for row in rows])


@dataclass(frozen=True)
class TokenizeJob:
    """What `data_prep/tokenize.py` is asked to do (its flags, by name)."""

    input: str
    output: str
    tokenizer: str
    seq_len: int = 4096
    eval_seqs: int = 500
    workers: int = 1
    #: Comma-separated subset of domains (None: every domain folder).
    domains: str | None = None
    force: bool = False


def tokenize_corpus(args: TokenizeJob) -> Path:
    """Tokenize a corpus as the module docstring says; return the output folder.

    Raises:
        TokenizeError, OutputError: one line naming the value (nothing is written).
    """
    src, out = Path(args.input).expanduser(), Path(args.output).expanduser()
    if not src.is_dir():
        raise TokenizeError(f"--input {str(src)!r} is not a directory of domain folders")
    check_separate(out, "--output", {"--input": src, "--tokenizer": args.tokenizer})
    check_replaceable(out, args.force, "--output")
    if args.seq_len < 2:
        raise TokenizeError(f"--seq-len {args.seq_len} must be at least 2")
    if args.eval_seqs < 0:
        raise TokenizeError(f"--eval-seqs {args.eval_seqs} must be 0 or more")
    if args.workers < 1:
        raise TokenizeError(f"--workers {args.workers} must be at least 1")
    available = sorted(p.name for p in src.iterdir() if p.is_dir())
    domains = args.domains.split(",") if args.domains else available
    if not domains:
        raise TokenizeError(f"--input {str(src)!r} has no domain folders")
    files = {}
    for d in domains:
        if d not in available:
            raise TokenizeError(
                f"domain {d!r} has no folder in {src}; found: {', '.join(available)}"
            )
        files[d] = domain_files(src / d)
        if not files[d]:
            raise TokenizeError(f"domain {d!r} has no {'/'.join(SUFFIXES)} files in {src / d}")
    tok = Tokenizer(args.tokenizer)

    pool = Pool(args.workers, _init_worker, (args.tokenizer,)) if args.workers > 1 else None
    try:
        with staged_output(out, force=args.force, flag="--output") as tmp:
            stage, stats = cli.Stages("tokenize", off_terminal_only=True), {}
            for d in domains:
                stage(f"{d}: {len(files[d])} file(s)")
                stats[d] = tokenize_domain(d, files[d], tmp, args, tok, pool)
            stage("done")
            manifest = {
                "seq_len": args.seq_len,
                "tokenizer": str(args.tokenizer),
                "vocab_size": tok.vocab_size,
                "bos_token_id": tok.bos,
                "eos_token_id": tok.eos,
                "dtype": "uint16" if tok.vocab_size <= 65536 else "uint32",
                "domains": stats,
            }
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            (tmp / "manifest.json").write_text(text)
    finally:
        if pool is not None:
            pool.terminate()
    return out


def parse_args(argv: list[str] | None) -> TokenizeJob:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", required=True, help="folder with one sub-folder per domain")
    p.add_argument("--output", required=True, help="where to write MDS shards and manifest.json")
    p.add_argument(
        "--tokenizer", required=True, help="HF tokenizer directory or SentencePiece .model"
    )
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per packed row")
    p.add_argument("--eval-seqs", type=int, default=500, help="held-out rows per domain")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--domains", default=None, help="comma-separated subset of domains")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output")
    return TokenizeJob(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: print(tokenize_corpus(args)))


if __name__ == "__main__":
    sys.exit(main())
