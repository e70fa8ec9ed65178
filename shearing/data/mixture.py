"""Multi-domain training data with sampling proportions that can change during a run.

The layout is the one `data_prep/tokenize.py` writes: `ROOT/manifest.json` and MDS shards
in `ROOT/<split>/<domain>/` with columns `tokens` (a packed row of token ids) and `domain`.
Every domain is read by index, from a local folder or through a node's cache of a remote
corpus (`shearing.data.corpus`); the sampling below does not depend on which.

Sampling (Sheared-LLaMA's dynamic batch loading, arXiv 2310.06694, section 2.2):
- Global sample index i = step * global_batch + rank * device_batch + j. Its domain is
  drawn with the proportions in force for i, from a uniform number that is a pure hash of
  (seed, i): every rank and dataloader worker agrees on the domain of every index, and a
  resumed run continues the same sequence.
- The k-th sample of domain d (counted over all ranks) is row `perm_p[k mod n_d]` of
  pass p = k // n_d, where `perm_p` is a permutation seeded by (seed, d, p): a domain
  that runs out starts a new, reshuffled pass (with a warning), never padding. A run that
  follows another on the same corpus (`data.rows_from`) takes over that run's permutations
  and starts domain d at k = the rows that run read, so it reads none of them again until
  the domain runs out (`rows_read` gives the counts a run hands on).
- Proportions live in a shared-memory schedule of (first index, proportions) entries, so
  an update made in the main process reaches worker processes. An update takes effect
  from an index far enough ahead that no worker has drawn it yet
  (`DomainMixture.update_delay_batches`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from shearing.config import KEYS as K
from shearing.data.corpus import Corpus, Rows

log = logging.getLogger(__name__)

#: Where a finished run records how far it read each domain (`DomainMixture.rows_read`).
POSITION_FILE = "data_position.json"
#: Room for this many proportion updates in one run (pruning: ~64, continued: ~120).
MAX_SCHEDULE = 4096
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniform_hash(seed: int, index: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) that depend only on (seed, index) (SplitMix64)."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def as_corpus(where: str | Path | Corpus) -> Corpus:
    """A `Corpus`, from a corpus or a local corpus folder."""
    return where if isinstance(where, Corpus) else Corpus(str(Path(where).expanduser()))


def read_manifest(where: str | Path | Corpus) -> dict:
    """The `manifest.json` of a tokenized corpus (`Corpus.manifest`).

    Raises:
        ConfigError: no manifest (not a corpus written by data_prep/tokenize.py), or a
            remote one that cannot be read.
    """
    return as_corpus(where).manifest()


def position_record(dataset: DomainMixture, num_samples: int) -> dict:
    """What `POSITION_FILE` holds after `num_samples` samples of `dataset`."""
    rows = dataset.rows_read(num_samples)
    return {
        "row_seed": dataset.row_seed,
        "samples": int(num_samples),
        "rows": dict(zip(dataset.domains, rows, strict=True)),
        "train_rows": dict(zip(dataset.domains, dataset.sizes, strict=True)),
    }


def read_position(
    run: str | Path, domains: Sequence[str], manifest: dict, root: str | Path
) -> tuple[int, list[int]]:
    """The row seed and per-domain row positions a finished run handed on (`data.rows_from`),
    checked against the `manifest` of this run's corpus at `root`.

    Raises:
        ValueError: one line: no record, a domain it did not read, or another corpus.
    """
    path = Path(run).expanduser()
    path = path / POSITION_FILE if path.is_dir() else path
    if not path.is_file():
        raise ValueError(
            f"{K.data.rows_from} {str(run)!r} has no {POSITION_FILE} (a training run writes it "
            "into its save_folder when it finishes)"
        )
    try:
        record = json.loads(path.read_text())
        seed, rows, train_rows = record["row_seed"], record["rows"], record["train_rows"]
        maps = isinstance(rows, dict) and isinstance(train_rows, dict)
        if not maps or rows.keys() != train_rows.keys():
            raise TypeError("rows and train_rows map the same domains to counts")
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"{K.data.rows_from} {str(run)!r}: {path.name} is not a position record this project "
            "wrote (row_seed, rows, train_rows)"
        ) from None
    for d in domains:
        if d not in rows:
            raise ValueError(f"{K.data.rows_from} {str(run)!r} did not read domain {d!r}")
        have = manifest["domains"][d]["train"]["rows"]
        if train_rows[d] != have:
            raise ValueError(
                f"{K.data.rows_from} {str(run)!r} read another corpus: domain {d!r} had "
                f"{train_rows[d]} training rows there, {have} in {str(root)!r}"
            )
    return int(seed), [int(rows[d]) for d in domains]


def open_domain(where: str | Path | Corpus, split: str, domain: str) -> Rows:
    """Random-access reader of one domain's rows in one split."""
    return as_corpus(where).split(split, [domain])[0]


class DomainMixture(IterableDataset):
    """Endless training samples `{"input_ids", "domain_idx", "sample_index"}` from domains.

    Args:
        root: the corpus (`Corpus`), or a local corpus folder.
        domains: domain names, in the order of `proportions`.
        proportions: initial sampling proportions (non-negative, sum 1).
        device_batch_size: samples per rank per step (the DataLoader's batch size).
        world_size, rank: this process' place among the training ranks.
        seed: seeds the domain draws and (without `row_seed`) the per-pass row permutations.
        prefetch_batches: most batches a DataLoader may have drawn ahead of training
            (`num_workers * prefetch_factor`); updates take effect after that.
        row_start: per domain, the position in its row sequence to start at (the rows an
            earlier run read; default 0).
        row_seed: seeds the row permutations (an earlier run's seed; default `seed`).
    """

    def __init__(
        self,
        root: str | Path | Corpus,
        domains: Sequence[str],
        proportions: Sequence[float],
        device_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        prefetch_batches: int = 0,
        row_start: Sequence[int] | None = None,
        row_seed: int | None = None,
    ) -> None:
        super().__init__()
        self.corpus, self.domains = as_corpus(root), list(domains)
        self.device_batch_size, self.world_size, self.rank = device_batch_size, world_size, rank
        self.global_batch_size = device_batch_size * world_size
        self.seed = seed
        self.row_seed = seed if row_seed is None else row_seed
        self.row_start = np.zeros(len(self.domains), dtype=np.int64)
        if row_start is not None:
            self.row_start += np.asarray(row_start, dtype=np.int64)
        self.update_delay_batches = prefetch_batches + 2
        # Opened here, in the main process: a remote corpus's StreamingDataset registers in
        # shared memory, and dataloader workers reuse these readers.
        self.readers = self.corpus.split("train", self.domains)
        self.sizes = [len(r) for r in self.readers]
        for d, n in zip(self.domains, self.sizes, strict=True):
            if n == 0:
                raise ValueError(f"domain {d!r} has no training rows in {self.corpus}")
        # Shared-memory schedule: row j = (first global index, proportions...).
        self._schedule = torch.zeros(MAX_SCHEDULE, 1 + len(self.domains), dtype=torch.float64)
        self._schedule_len = torch.zeros((), dtype=torch.int64)
        self._schedule.share_memory_()
        self._schedule_len.share_memory_()
        self._start_index = 0
        self._append(0, proportions)

    # -- proportions ------------------------------------------------------------------

    def _append(self, first_index: int, proportions: Sequence[float]) -> None:
        n = int(self._schedule_len)
        if n == MAX_SCHEDULE:
            raise RuntimeError(f"more than {MAX_SCHEDULE} proportion updates in one run")
        self._schedule[n, 0] = float(first_index)
        self._schedule[n, 1:] = torch.as_tensor(proportions, dtype=torch.float64)
        self._schedule_len.fill_(n + 1)

    def schedule(self) -> list[tuple[int, list[float]]]:
        """All (first global index, proportions) entries so far."""
        n = int(self._schedule_len)
        return [(int(r[0]), r[1:].tolist()) for r in self._schedule[:n]]

    @property
    def proportions(self) -> list[float]:
        """The most recently set proportions."""
        return self.schedule()[-1][1]

    def set_proportions(self, proportions: Sequence[float], completed_steps: int) -> int:
        """Use `proportions` from the first index no dataloader worker has drawn yet.

        Args:
            proportions: new sampling proportions, one per domain.
            completed_steps: training steps finished so far.

        Returns:
            The first global sample index drawn with the new proportions.
        """
        first = (completed_steps + self.update_delay_batches) * self.global_batch_size
        first = max(first, self.schedule()[-1][0])
        self._append(first, proportions)
        return first

    # -- drawing ----------------------------------------------------------------------

    def draw_domains(self, start: int, count: int) -> np.ndarray:
        """Domain of each global index in [start, start + count)."""
        index = np.arange(start, start + count, dtype=np.int64)
        u = uniform_hash(self.seed, index)
        out = np.empty(count, dtype=np.int64)
        entries = self.schedule()
        for j, (first, props) in enumerate(entries):
            end = entries[j + 1][0] if j + 1 < len(entries) else math.inf
            sel = (index >= first) & (index < end)
            if sel.any():
                cdf = np.cumsum(props)
                cdf /= cdf[-1]
                out[sel] = np.minimum(np.searchsorted(cdf, u[sel], side="right"), len(props) - 1)
        return out

    def row_of(self, domain: int, k: int, perms: dict) -> int:
        """Row of the k-th sample of `domain`: position k mod n of pass k // n's permutation."""
        epoch, pos = divmod(k, self.sizes[domain])
        if (domain, epoch) not in perms:
            if len(perms) > 4 * len(self.domains):
                perms.clear()
            rng = np.random.default_rng([self.row_seed, domain, epoch])
            perms[(domain, epoch)] = rng.permutation(self.sizes[domain])
        return int(perms[(domain, epoch)][pos])

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self._start_index // self.global_batch_size
        # per-domain positions at the resume point (the draws before it replayed)
        counts = np.asarray(self.rows_read(step * self.global_batch_size), dtype=np.int64)
        perms: dict = {}
        warned = set()
        while True:
            domains = self.draw_domains(step * self.global_batch_size, self.global_batch_size)
            # k-th occurrence of each sample's domain, over all ranks, in index order
            order = np.zeros(len(domains), dtype=np.int64)
            for d in range(len(self.domains)):
                sel = domains == d
                order[sel] = counts[d] + np.arange(sel.sum())
                counts[d] += sel.sum()
            mine = step % workers == worker
            if mine:
                lo = self.rank * self.device_batch_size
                for j in range(lo, lo + self.device_batch_size):
                    d, k = int(domains[j]), int(order[j])
                    if k >= self.sizes[d] and (d, k // self.sizes[d]) not in warned:
                        warned.add((d, k // self.sizes[d]))
                        log.warning(
                            "domain %r ran out of rows; starting pass %d (reshuffled)",
                            self.domains[d],
                            k // self.sizes[d],
                        )
                    tokens = self.readers[d][self.row_of(d, k, perms)]["tokens"]
                    yield {
                        "input_ids": torch.from_numpy(tokens.astype(np.int64)),
                        "domain_idx": torch.tensor(d),
                        "sample_index": torch.tensor(step * self.global_batch_size + j),
                    }
            step += 1

    def rows_read(self, num_samples: int) -> list[int]:
        """Position in each domain's row sequence after the first `num_samples` samples:
        where a run that follows this one starts (`row_start`)."""
        drawn = np.bincount(self.draw_domains(0, num_samples), minlength=len(self.domains))
        return (self.row_start + drawn).tolist()

    # -- composer resumption ---------------------------------------------------------

    def state_dict(self, num_samples: int, from_beginning: bool = True) -> dict:
        """Position (global samples consumed) and the proportion schedule."""
        return {"num_samples": int(num_samples), "schedule": self.schedule()}

    def load_state_dict(self, state: dict) -> None:
        """Continue after `num_samples` with the saved proportion schedule."""
        if state["num_samples"] % self.global_batch_size:
            raise ValueError(
                f"cannot resume at sample {state['num_samples']}: not a multiple of the "
                f"global batch size {self.global_batch_size}"
            )
        self._schedule_len.fill_(0)
        for first, props in state["schedule"]:
            self._append(first, props)
        self._start_index = state["num_samples"]


class DomainEvalSet(IterableDataset):
    """Every held-out row of every domain: `{"input_ids", "domain_idx"}`.

    Rows are strided over ranks; every rank yields the same number of rows (FSDP needs
    the same number of forward passes everywhere), the shorter ones padded with a row
    whose `domain_idx` is -1, which the metrics ignore.

    Args:
        root: the corpus (`Corpus`), or a local corpus folder.
        domains: domain names (their order defines `domain_idx`).
        max_rows_per_domain: keep at most this many rows of each domain.
        rank, world_size: this process' place among the ranks.
    """

    def __init__(
        self,
        root: str | Path | Corpus,
        domains: Sequence[str],
        max_rows_per_domain: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.readers = as_corpus(root).split("eval", domains)
        index = []
        for d, reader in enumerate(self.readers):
            n = (
                len(reader)
                if max_rows_per_domain is None
                else min(len(reader), max_rows_per_domain)
            )
            index += [(d, r) for r in range(n)]
        per_rank = math.ceil(len(index) / world_size)
        mine = index[rank::world_size]
        self.index = mine + [(-1, 0)] * (per_rank - len(mine))

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[dict]:
        for d, r in self.index:
            tokens = self.readers[max(d, 0)][r]["tokens"]
            yield {
                "input_ids": torch.from_numpy(tokens.astype(np.int64)),
                "domain_idx": torch.tensor(d),
            }
