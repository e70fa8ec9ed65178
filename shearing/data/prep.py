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

`--output` may also be an object-store URL (s3://, gs://, oci://, azure://, ...): the
shards are written to a local staging folder and uploaded by streaming's writer as each
one is finished (its `out=(local, remote)` form), and `manifest.json` is uploaded last, so
an upload that is cut off is never read as a corpus. A URL that already holds a corpus is
not replaced (an object store cannot swap two prefixes at once): write to a new prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import io
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import urllib.parse
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from streaming import MDSWriter
from tqdm import tqdm

from shearing import cli
from shearing.cli import CommandFailed
from shearing.data.corpus import MANIFEST, first_line, is_url, join
from shearing.files import check_replaceable, check_separate, kill_point, staged_output

SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".parquet")
EVAL_STRIDE = 10  # every 10th document is held out while eval rows are still needed
DOCS_PER_TASK = 256
CHARS_PER_TASK = 1 << 19  # ~0.1M tokens: ~0.2 s of one core's tokenizing
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
        self._sp = self._hf = self._fast = None
        if path.is_file() and path.suffix == ".model":
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(path))
            self.vocab_size = self._sp.get_piece_size()
            self.bos, self.eos = self._sp.bos_id(), self._sp.eos_id()
        elif path.is_dir():
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(path)
            # a fast tokenizer's own batch call: what `self._hf(texts)` runs, without
            # transformers' per-call bookkeeping (attention masks, BatchEncoding)
            self._fast = self._hf.backend_tokenizer if self._hf.is_fast else None
            self.vocab_size = len(self._hf)
            self.bos, self.eos = self._hf.bos_token_id, self._hf.eos_token_id
        else:
            raise TokenizeError(
                f"--tokenizer {spec!r} is neither a Hugging Face tokenizer directory nor a "
                "SentencePiece .model file"
            )
        if self.bos is None or self.bos < 0 or self.eos is None or self.eos < 0:
            raise TokenizeError(f"--tokenizer {spec!r} defines no BOS or EOS token")
        #: the shards' token type: uint16 when every id fits, else uint32
        self.dtype = np.uint16 if self.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        if self._sp is not None:
            return self._sp.encode(texts)
        if self._fast is not None:
            return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return self._hf(texts, add_special_tokens=False)["input_ids"]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids framed by BOS and EOS, in one array, and where each text ends.

        One flat array is cheap to send between processes and to pack.
        """
        rows = self.ids(texts)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) + 2
        ends = np.cumsum(lengths)
        flat = np.empty(int(ends[-1]), dtype=np.uint32)  # any vocabulary; half of int64's bytes
        frame = np.zeros(len(flat), dtype=bool)
        frame[ends - lengths] = frame[ends - 1] = True
        flat[ends - lengths], flat[ends - 1] = self.bos, self.eos
        body = int(ends[-1]) - 2 * len(rows)
        flat[~frame] = np.fromiter(itertools.chain.from_iterable(rows), np.uint32, count=body)
        return flat, ends


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tok: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tok
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def worker_pool(workers: int, tok: Tokenizer) -> Iterator[Pool]:
    """`workers` forked processes sharing the loaded tokenizer. They are forked with
    SIGTERM's default action: a caller's handler that raises SystemExit instead (composer
    installs one when it is imported) can let a worker outlive `Pool.terminate`, which then
    waits for it forever. Closed and joined when the work is done; terminated on error."""
    main = threading.current_thread() is threading.main_thread()
    kept = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main else None
    # the workers' garbage collector leaves the objects they inherit alone, so it does not
    # copy the caller's memory page by page (copy-on-write)
    gc.freeze()
    try:
        pool = Pool(workers, _init_worker, (tok,))
    finally:
        gc.unfreeze()
        if main:
            signal.signal(signal.SIGTERM, kept)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()


def _encode_task(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _worker_tokenizer.encode(texts)


def document_batches(files: dict[str, list[Path]]) -> Iterator[tuple[str, list[str]]]:
    """(domain, texts) tasks over every domain in turn: at most `DOCS_PER_TASK` documents
    or about `CHARS_PER_TASK` characters each, so tasks take similar time."""
    for domain, paths in files.items():
        batch: list[str] = []
        chars = 0
        for path in paths:
            for text in read_texts(path):
                batch.append(text)
                chars += len(text)
                if len(batch) == DOCS_PER_TASK or chars >= CHARS_PER_TASK:
                    yield domain, batch
                    batch, chars = [], 0
        if batch:
            yield domain, batch


def encoded_batches(
    tasks: Iterator[tuple[str, list[str]]], tok: Tokenizer, pool, window: int
) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    """(domain, encoded texts) in task order. With a pool, at most `window` tasks are in
    flight (bounded memory), across domain boundaries, so workers never wait for the
    main process to finish a domain."""
    if pool is None:
        for domain, texts in tasks:
            yield domain, tok.encode(texts)
        return
    pending: deque = deque()
    for domain, texts in tasks:
        pending.append((domain, pool.apply_async(_encode_task, (texts,))))
        if len(pending) >= window:
            domain, result = pending.popleft()
            yield domain, result.get()
    while pending:
        domain, result = pending.popleft()
        yield domain, result.get()


# --- packing --------------------------------------------------------------------------


class Packer:
    """Concatenates documents and writes full rows of `seq_len` tokens to one MDS stream
    (written in `out`, and uploaded to `remote` when one is given)."""

    def __init__(
        self,
        out: Path,
        domain: str,
        seq_len: int,
        dtype: np.dtype,
        max_rows: int | None = None,
        remote: str | None = None,
    ) -> None:
        self.writer = MDSWriter(
            out=str(out) if remote is None else (str(out), remote),
            columns={"tokens": f"ndarray:{np.dtype(dtype).name}", "domain": "str"},
            size_limit=SHARD_BYTES,
        )
        self.domain, self.seq_len, self.dtype, self.max_rows = domain, seq_len, dtype, max_rows
        self.buffer = np.empty(0, dtype=dtype)
        self.documents = self.tokens = self.rows = 0

    def add(self, ids: np.ndarray, documents: int = 1) -> None:
        """Append `documents` whole documents' ids (concatenated) and write full rows."""
        self.documents += documents
        self.tokens += len(ids)
        if self.rows == self.max_rows:
            return  # full: the rest of held-out text is not needed
        buffer = np.concatenate([self.buffer, ids.astype(self.dtype)])
        n = len(buffer) // self.seq_len
        if self.max_rows is not None:
            n = min(n, self.max_rows - self.rows)
        for row in buffer[: n * self.seq_len].reshape(n, self.seq_len):
            self.writer.write({"tokens": row, "domain": self.domain})
        self.rows += n
        self.buffer = buffer[n * self.seq_len :] if self.rows != self.max_rows else buffer[:0]

    def close(self) -> dict:
        self.writer.finish()
        return {"documents": self.documents, "tokens": self.tokens, "rows": self.rows}


class DomainWriter:
    """One domain's train and held-out streams: every `EVAL_STRIDE`-th document is held
    out until `--eval-seqs` rows are filled, the rest is training text."""

    def __init__(
        self, domain: str, out: Path, args: TokenizeJob, dtype: np.dtype, remote: str | None
    ) -> None:
        self.domain, self.dtype, self.args = domain, dtype, args

        def at(split: str) -> str | None:
            return None if remote is None else join(remote, split, domain)

        self.train = Packer(out / "train" / domain, domain, args.seq_len, dtype, remote=at("train"))
        self.held = Packer(
            out / "eval" / domain, domain, args.seq_len, dtype, args.eval_seqs, at("eval")
        )
        self.documents = 0
        self.bar = tqdm(desc=f"tokenizing {domain}", unit="doc", disable=None)

    def holding_out(self) -> bool:
        needed = self.args.eval_seqs * self.args.seq_len
        return self.held.tokens < needed and self.held.rows < self.args.eval_seqs

    def add(self, flat: np.ndarray, ends: np.ndarray) -> None:
        if flat.max() > np.iinfo(self.dtype).max:
            raise TokenizeError(
                f"domain {self.domain!r}: token id {int(flat.max())} does not fit "
                f"{np.dtype(self.dtype).name}"
            )
        starts = np.concatenate([[0], ends[:-1]])
        i = 0
        while i < len(ends) and self.holding_out():  # document by document
            target = self.held if (self.documents + i) % EVAL_STRIDE == 0 else self.train
            target.add(flat[starts[i] : ends[i]])
            i += 1
        if i < len(ends):  # the held-out rows are full: the rest in one piece
            self.train.add(flat[starts[i] :], documents=len(ends) - i)
        self.documents += len(ends)
        self.bar.update(len(ends))

    def close(self) -> dict:
        args = self.args
        self.bar.close()
        stats = {"train": self.train.close(), "eval": self.held.close()}
        if stats["train"]["rows"] == 0:
            raise TokenizeError(
                f"domain {self.domain!r} has {stats['train']['tokens']} training tokens, fewer "
                f"than one row of --seq-len {args.seq_len}"
            )
        if args.eval_seqs > 0 and stats["eval"]["rows"] == 0:
            raise TokenizeError(
                f"domain {self.domain!r}: its held-out documents fill no eval row of "
                f"--seq-len {args.seq_len}"
            )
        return stats


def tokenize_domains(
    files: dict[str, list[Path]],
    out: Path,
    args: TokenizeJob,
    tok: Tokenizer,
    pool,
    remote: str | None = None,
) -> dict[str, dict]:
    """Tokenize and pack every domain, in order, into `out` (and uploaded to `remote`);
    returns each domain's counts."""
    stage, stats = cli.Stages("tokenize", off_terminal_only=True), {}
    expected = iter(files)  # batches arrive domain by domain, in this order
    writer: DomainWriter | None = None

    def next_domain(arrived: str | None) -> DomainWriter | None:
        """Close the current domain; open `arrived`, which must be the next in order (a
        domain skipped over yielded no batch: it has no text)."""
        if writer is not None:
            stats[writer.domain] = writer.close()
        name = next(expected, None)
        if name is None:
            return None
        stage(f"{name}: {len(files[name])} file(s)")
        if name != arrived:
            raise TokenizeError(f"domain {name!r} has no text in {len(files[name])} file(s)")
        return DomainWriter(name, out, args, tok.dtype, remote)

    window = 4 * args.workers
    for domain, (flat, ends) in encoded_batches(document_batches(files), tok, pool, window):
        if writer is None or domain != writer.domain:
            writer = next_domain(domain)
        writer.add(flat, ends)
    next_domain(None)  # closes the last domain; a domain after it has no text
    stage("done")
    return stats


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


def tokenize_corpus(args: TokenizeJob) -> Path | str:
    """Tokenize a corpus as the module docstring says; return the output folder or URL.

    Raises:
        TokenizeError, OutputError: one line naming the value (nothing is written).
        CommandFailed: an upload to a remote `--output` failed part way (no manifest is
            there: it is not a corpus).
    """
    src = Path(args.input).expanduser()
    remote = args.output if is_url(args.output) else None
    out = None if remote else Path(args.output).expanduser()
    if not src.is_dir():
        raise TokenizeError(f"--input {str(src)!r} is not a directory of domain folders")
    if out is not None:
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
    if remote is not None:
        check_remote_output(remote, args.force)
    # --workers is the parallelism: the tokenizer itself stays on one thread per process
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        tok = Tokenizer(args.tokenizer)
        pooled = worker_pool(args.workers, tok) if args.workers > 1 else contextlib.nullcontext()
        with pooled as pool:
            return write_output(files, out, remote, args, tok, pool)
    finally:
        if parallelism is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallelism


def write_output(files, out: Path | None, remote: str | None, args, tok: Tokenizer, pool):
    """The corpus into the staged local `out`, or through a staging folder to `remote`."""
    if remote is None:
        with staged_output(out, force=args.force, flag="--output") as tmp:
            write_corpus(files, tmp, args, tok, pool)
        return out
    with tempfile.TemporaryDirectory(prefix="shearing-upload-") as tmp:
        write_corpus(files, Path(tmp), args, tok, pool, remote)
    return remote


def write_corpus(
    files: dict[str, list[Path]],
    out: Path,
    args: TokenizeJob,
    tok: Tokenizer,
    pool,
    remote: str | None = None,
) -> None:
    """The shards of every domain, then `manifest.json`, in `out`; with `remote`, each
    file is uploaded there too, the manifest last."""
    try:
        stats = tokenize_domains(files, out, args, tok, pool, remote)
    except (OSError, RuntimeError) as err:
        if remote is None:
            raise
        raise CommandFailed(f"--output {remote}: an upload failed ({first_line(err)})") from None
    manifest = {
        "seq_len": args.seq_len,
        "tokenizer": str(args.tokenizer),
        "vocab_size": tok.vocab_size,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "dtype": np.dtype(tok.dtype).name,
        "domains": stats,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if remote is None:
        (out / MANIFEST).write_text(text)
        return
    kill_point("uploaded")  # test hook: every shard is up, the manifest is not
    last = out / "manifest-upload"
    last.mkdir()
    try:
        up = uploader(last, remote)  # made while its folder is empty, as streaming expects
        (last / MANIFEST).write_text(text)
        up.upload_file(MANIFEST)
    except Exception as err:
        raise CommandFailed(
            f"--output {remote}: the manifest's upload failed ({first_line(err)}); the "
            "shards there are not a corpus until it is uploaded (run again with --force)"
        ) from None


def uploader(local: Path, remote: str):
    """streaming's uploader from `local` to `remote` (the local files are kept)."""
    from streaming.base.storage import CloudUploader

    return CloudUploader.get((str(local), remote), keep_local=True)


def check_remote_output(remote: str, force: bool) -> None:
    """A remote `--output` must be reachable and hold no corpus; objects without a
    manifest (an upload cut off) are written over only with `force`. Nothing is written.

    Raises:
        TokenizeError: one line naming the URL.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="shearing-check-") as tmp:
            found = uploader(Path(tmp), remote).list_objects() or []
    except ValueError as err:
        raise TokenizeError(f"--output {remote!r}: {first_line(err)}") from None
    except Exception as err:  # each store's client has its own error types
        raise TokenizeError(f"--output {remote!r} cannot be reached ({first_line(err)})") from None
    prefix = urllib.parse.urlparse(remote).path.strip("/")
    names = [f[len(prefix) :].lstrip("/") if f.startswith(prefix) else f for f in found]
    if MANIFEST in names:
        raise TokenizeError(
            f"--output {remote!r} already holds a corpus ({MANIFEST}); a remote corpus is not "
            "replaced in place: write to a new prefix, or delete that one first"
        )
    if names and not force:
        raise TokenizeError(
            f"--output {remote!r} holds {len(names)} object(s) but no {MANIFEST} (an upload cut "
            "off?); pass --force to write over them"
        )


def parse_args(argv: list[str] | None) -> TokenizeJob:
    p = argparse.ArgumentParser(
        prog="python data_prep/tokenize.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[3:]),  # input, output, remote output
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="folder with one sub-folder per domain")
    p.add_argument(
        "--output",
        required=True,
        help="folder, or object-store URL (s3://...), to write MDS shards and manifest.json to",
    )
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
    return cli.run(lambda: print(tokenize_corpus(args)), failures=(CommandFailed,))


if __name__ == "__main__":
    sys.exit(main())
