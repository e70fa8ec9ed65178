"""Where a tokenized corpus lives, and its rows by index.

A corpus is what `data_prep/tokenize.py` writes: `ROOT/manifest.json` and MDS shards in
`ROOT/<split>/<domain>/`. It lives in one of two places:

- a local folder (`data.path`), read in place through streaming's shard readers;
- a remote prefix (`data.remote`): any URL mosaicml-streaming downloads from (`s3://`,
  `gs://`, `oci://`, `azure://`, `hf://`, ...) or a plain path standing for a shared
  filesystem, cached on each node in `data.local`. The manifest is read from the remote
  on every run (and kept in the cache: a cache of another corpus is refused). Shards are
  fetched on first use by streaming's own `StreamingDataset` (one per split, one `Stream`
  per domain): its download and retry, its cache accounting shared by the node's
  processes, and its eviction of the least recently read shards under `data.cache_limit`.
  Only its random access by index (`get_item`) is used, so the sampling above it
  (`shearing.data.mixture`) is the same, sample for sample, as from a local copy.

A complete cache folder is itself a local copy of the corpus (the same layout).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streaming.base.format import reader_from_json

from shearing.config import KEYS as K
from shearing.config import ConfigError, DataConfig, expand_path, parse_bytes

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = ("train", "eval")


class ShardUnavailable(RuntimeError):
    """A shard of a remote corpus could not be fetched (after streaming's retries): one line
    naming the shard and its URL. Raised in a dataloader worker, torch re-raises it in the
    training process with the worker's traceback as its message; the line is taken back
    out of it, so the message stays one line."""

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Traceback" in message:  # torch's re-raise
            last = message.strip().splitlines()[-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def is_url(path: str) -> bool:
    """Whether `path` names an object store (a scheme such as s3://), not a local path."""
    return bool(urllib.parse.urlparse(str(path)).scheme) and "://" in str(path)


def join(root: str, *parts: str) -> str:
    """`root/parts...` for a URL or a path."""
    return "/".join([str(root).rstrip("/"), *parts])


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus: `root` is its local folder, or (with `cache`) its remote prefix.

    Args:
        root: `data.path`, or `data.remote` when `cache` is set.
        cache: `data.local`, the node's cache folder of a remote corpus (None: local corpus).
        cache_limit: most bytes the cache may hold (None: no limit).
        download_retry: attempts per file download (streaming's `download_retry`).
        download_timeout: seconds one file download may take.
    """

    root: str
    cache: str | None = None
    cache_limit: int | None = None
    download_retry: int = 2
    download_timeout: float = 60.0

    @classmethod
    def of(cls, d: DataConfig) -> Corpus:
        """The corpus a config's data section names (checked by `shearing.config.check`)."""
        if d.remote is None:
            return cls(str(expand_path(d.path)))
        remote = d.remote if is_url(d.remote) else str(expand_path(d.remote))
        limit = None if d.cache_limit is None else parse_bytes(d.cache_limit)
        return cls(remote, str(expand_path(d.local)), limit, d.download_retry, d.download_timeout)

    @property
    def remote(self) -> bool:
        return self.cache is not None

    @property
    def key(self) -> str:
        """The config key that names the corpus, for messages."""
        return K.data.remote if self.remote else K.data.path

    def __str__(self) -> str:
        return self.root if not self.remote else f"{self.root} (cached in {self.cache})"

    # -- the manifest -----------------------------------------------------------------

    def manifest(self) -> dict:
        """The corpus's `manifest.json`; a remote one is downloaded (and kept in the cache).

        Raises:
            ConfigError: one line: no manifest, an unreachable remote, a cache folder that
                holds another corpus or cannot be written or is too small.
        """
        if not self.remote:
            path = Path(self.root).expanduser() / MANIFEST
            if not path.is_file():
                raise ConfigError(
                    f"{K.data.path} {self.root!r} has no {MANIFEST}; tokenize a corpus with "
                    "data_prep/tokenize.py first"
                )
            return json.loads(path.read_text())
        with tempfile.TemporaryDirectory(prefix="shearing-manifest-") as tmp:
            fetched = Path(tmp) / MANIFEST
            self._fetch(MANIFEST, fetched)
            text = fetched.read_text()
        try:
            manifest = json.loads(text)
        except ValueError:
            raise ConfigError(
                f"{K.data.remote} {self.root!r}: its {MANIFEST} is not JSON (not a corpus written "
                "by data_prep/tokenize.py)"
            ) from None
        self._keep_in_cache(text, manifest)
        return manifest

    def _fetch(self, name: str, to: Path) -> None:
        """Download `root/name` to `to` through streaming's downloader, with its retry."""
        from streaming.base.storage import CloudDownloader
        from streaming.base.util import retry

        url = join(self.root, name)
        try:
            downloader = CloudDownloader.get(url)
        except ValueError:
            raise ConfigError(
                f"{K.data.remote} {self.root!r}: no downloader for its scheme; use a URL "
                "mosaicml-streaming reads (s3://, gs://, oci://, azure://, hf://, ...) or a path"
            ) from None
        try:
            retry(num_attempts=max(1, self.download_retry), initial_backoff=0.2)(
                lambda: downloader.download(url, str(to), self.download_timeout)
            )()
        except Exception as err:  # botocore, google, oci, ... each has its own types
            if _not_found(err):
                raise ConfigError(
                    f"{K.data.remote} {self.root!r} has no {name} (not a corpus written by "
                    f"data_prep/tokenize.py --output {self.root})"
                ) from None
            raise ConfigError(
                f"{K.data.remote} {self.root!r} cannot be read: {first_line(err)}"
            ) from None
        finally:
            downloader.clean_up()

    def _keep_in_cache(self, text: str, manifest: dict) -> None:
        """Put the remote's manifest in the cache folder, refusing (before anything is
        written) a folder that caches another corpus, has no room for what the run will
        cache, or cannot be written."""
        from shearing.files import write_text_atomic

        cache = Path(self.cache).expanduser()
        kept = cache / MANIFEST
        if kept.is_file() and kept.read_text() != text:
            raise ConfigError(
                f"{K.data.local} {self.cache!r} caches another corpus than {K.data.remote} "
                f"{self.root!r} (their {MANIFEST} differ); empty it or choose another folder"
            )
        made = [p for p in (cache, *cache.parents) if not p.exists()]  # deepest first
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            # one phrase for what root and other users are told differently
            denied = err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            why = "it is read-only here" if denied else (err.strerror or str(err)).lower()
            raise ConfigError(
                f"{K.data.local} {self.cache!r} cannot be written ({why}); choose a folder "
                "this node can write"
            ) from None
        needed = corpus_bytes(manifest)
        if self.cache_limit is not None:
            needed = min(needed, self.cache_limit)
        held = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        free = shutil.disk_usage(cache).free + held
        if needed > free:
            for p in made:  # the refused run leaves no folder behind
                p.rmdir()
            raise ConfigError(
                f"{K.data.local} {self.cache!r} has {_size(free)} free for the cache but the "
                f"corpus needs {_size(needed)}; set {K.data.cache_limit} below that (at least "
                "four shards) or choose a folder with more room"
            )
        if not kept.is_file():
            write_text_atomic(kept, text)

    # -- rows ------------------------------------------------------------------------

    def split(self, split: str, domains: Sequence[str]) -> list[Rows]:
        """Random access to the rows of each domain of one split, in `domains`' order."""
        if not self.remote:
            return [DomainRows(Path(self.root).expanduser() / split / d) for d in domains]
        return RemoteSplit(self, split, domains).domains


def corpus_bytes(manifest: dict) -> int:
    """What the corpus's shards hold, from its manifest: rows x row length x token size."""
    itemsize = np.dtype(manifest.get("dtype", "uint32")).itemsize
    rows = sum(s["rows"] for d in manifest["domains"].values() for s in d.values())
    return rows * manifest["seq_len"] * itemsize


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def _not_found(err: BaseException) -> bool:
    """Whether a downloader's error says the object does not exist."""
    if isinstance(err, FileNotFoundError):
        return True
    response = getattr(err, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")
    return getattr(err, "code", None) == 404  # google.api_core's NotFound


class Rows:
    """Random access to one domain's rows: `len(rows)`, `rows[i]` -> `{"tokens", ...}`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        raise NotImplementedError


class DomainRows(Rows):
    """The rows of one domain's local MDS shards.

    Built on streaming's shard readers (`streaming.base.format.reader_from_json`) rather
    than `StreamingDataset`, which registers shared memory per instance and refuses two
    live instances over one folder: a local corpus is read in place by any number of runs.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)
        index = Path(directory) / "index.json"
        if not index.is_file():
            raise ValueError(f"{self.directory!r} holds no MDS shards (no index.json)")
        shards = json.loads(index.read_text())["shards"]
        self.shards = [reader_from_json(self.directory, None, info) for info in shards]
        self.offsets = np.cumsum([0] + [s.samples for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)} in {self.directory}")
        shard = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.shards[shard].get_item(i - int(self.offsets[shard]))


class RemoteSplit:
    """One split of a remote corpus: a `StreamingDataset` over one `Stream` per domain
    (remote `ROOT/<split>/<domain>`, cached in `LOCAL/<split>/<domain>`), read by index
    through `domains` (one `RemoteRows` each; they hold the dataset, not this object, so
    nothing keeps it alive in a reference cycle: streaming's registration of the cache
    folder ends as soon as the last reader goes)."""

    def __init__(self, corpus: Corpus, split: str, domains: Sequence[str]) -> None:
        from streaming import Stream, StreamingDataset

        cache = str(Path(corpus.cache).expanduser())
        streams = [
            Stream(remote=join(corpus.root, split, d), local=join(cache, split, d)) for d in domains
        ]
        try:
            dataset = StreamingDataset(
                streams=streams,
                cache_limit=corpus.cache_limit,
                download_retry=corpus.download_retry,
                download_timeout=corpus.download_timeout,
                predownload=1,  # only read by index here: nothing is downloaded ahead
                batch_size=1,
            )
        except ValueError as err:  # streaming's refusals of the cache folder or its limit
            if "Reused local directory" in str(err):
                raise ConfigError(
                    f"{K.data.local} {corpus.cache!r} is in use by another run on this machine "
                    "(streaming reads one cache folder for one run at a time); give this run "
                    "its own"
                ) from None
            if "ache limit" in str(err) or "cache usage" in str(err):
                reason = first_line(err).split(". ")[0]  # streaming's numbers, not its advice
                raise ConfigError(
                    f"{K.data.cache_limit}={corpus.cache_limit} bytes is too small for this "
                    f"corpus ({reason}); streaming needs room for the indexes and four shards"
                ) from None
            raise ConfigError(
                f"{K.data.remote} {corpus.root!r}: the {split} shards cannot be read "
                f"({first_line(err)})"
            ) from None
        except Exception as err:  # a domain's index.json: missing, unreachable
            raise ConfigError(
                f"{K.data.remote} {corpus.root!r}: the {split} shards cannot be read "
                f"({first_line(err)})"
            ) from None
        offsets, sizes = dataset.sample_offset_per_stream, dataset.samples_per_stream
        self.domains = [
            RemoteRows(dataset, d, int(o), int(n))
            for d, o, n in zip(domains, offsets, sizes, strict=True)
        ]


class RemoteRows(Rows):
    """The rows of one domain of a `RemoteSplit`: row i is sample `offset + i` of the
    split's dataset, its shard fetched (and others evicted) by streaming as needed."""

    def __init__(self, dataset, domain: str, offset: int, size: int) -> None:
        self.dataset, self.domain, self.offset, self.size = dataset, domain, offset, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(f"row {i} of {self.size} in {self.domain!r}")
        sample = self.offset + i
        try:
            return self.dataset.get_item(sample)
        except Exception as err:
            ds = self.dataset
            shard_id, _ = ds.spanner[sample]
            stream = ds.streams[int(ds.stream_per_shard[shard_id])]
            name = ds.shards[shard_id].file_pairs[0][0].basename
            cause = "not found" if _not_found(err) else first_line(err)
            raise ShardUnavailable(
                f"{K.data.remote}: shard {join(stream.remote, name)} could not be fetched into "
                f"{stream.local} after {stream.download_retry} attempts ({cause})"
            ) from None
