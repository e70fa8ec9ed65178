"""The domain mixture: frequencies, updates reaching workers, resume, rank agreement."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shearing.data.mixture import DomainEvalSet, DomainMixture, open_domain

DOMAINS = ["alpha", "beta", "gamma"]


def chi_square_p(counts, proportions):
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(proportions) * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)).item()


def mixture(ws, proportions, batch=10, **kwargs):
    return DomainMixture(
        ws["data"], DOMAINS, proportions, device_batch_size=batch, seed=3, **kwargs
    )


def batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_frequencies_follow_proportions_and_an_update_reaches_workers(tiny_workspace):
    old, new = [0.5, 0.3, 0.2], [0.1, 0.2, 0.7]
    ds = mixture(tiny_workspace, old, prefetch_batches=2 * 2)
    loader = DataLoader(ds, batch_size=10, num_workers=2, prefetch_factor=2)
    it = iter(loader)
    first_half = [next(it) for _ in range(2000)]  # 20,000 samples
    first_new = ds.set_proportions(new, completed_steps=2000)
    second_half = [next(it) for _ in range(2000)]
    samples = first_half + second_half
    index = torch.cat([b["sample_index"] for b in samples]).numpy()
    domain = torch.cat([b["domain_idx"] for b in samples]).numpy()
    assert np.array_equal(index, np.arange(len(index)))
    before, after = domain[index < first_new], domain[index >= first_new]
    assert len(before) >= 20_000 and len(after) >= 19_000
    assert chi_square_p(np.bincount(before, minlength=3), old) > 0.001
    assert chi_square_p(np.bincount(after, minlength=3), new) > 0.001
    assert chi_square_p(np.bincount(after, minlength=3), old) < 1e-6  # it did change


def test_samples_are_the_rows_of_their_domain(tiny_workspace):
    ds = mixture(tiny_workspace, [0.3, 0.3, 0.4], batch=4)
    readers = [open_domain(tiny_workspace["data"], "train", d) for d in DOMAINS]
    rows_by_domain = [{tuple(r[i]["tokens"].tolist()) for i in range(len(r))} for r in readers]
    for batch in batches(DataLoader(ds, batch_size=4), 20):
        for ids, d in zip(batch["input_ids"], batch["domain_idx"], strict=True):
            assert tuple(ids.tolist()) in rows_by_domain[int(d)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tiny_workspace, workers):
    props = [0.2, 0.5, 0.3]
    ds = mixture(tiny_workspace, props, batch=4, prefetch_batches=2 * workers)
    loader_kwargs = dict(batch_size=4, num_workers=workers, prefetch_factor=2 if workers else None)
    it = iter(DataLoader(ds, **loader_kwargs))
    [next(it) for _ in range(30)]
    ds.set_proportions([0.6, 0.2, 0.2], completed_steps=30)
    [next(it) for _ in range(10)]
    state = ds.state_dict(num_samples=40 * 4, from_beginning=True)
    expected = [next(it) for _ in range(50)]  # the next 200 samples

    fresh = mixture(tiny_workspace, [1 / 3] * 3, batch=4, prefetch_batches=2 * workers)
    fresh.load_state_dict(state)
    got = batches(DataLoader(fresh, **loader_kwargs), 50)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["sample_index"], b["sample_index"])
    assert fresh.schedule() == ds.schedule()


def test_ranks_agree_and_split_each_global_batch(tiny_workspace):
    props = [0.4, 0.4, 0.2]
    whole = batches(DataLoader(mixture(tiny_workspace, props, batch=6), batch_size=6), 30)
    rank0 = batches(
        DataLoader(mixture(tiny_workspace, props, batch=3, world_size=2, rank=0), batch_size=3), 30
    )
    rank1 = batches(
        DataLoader(mixture(tiny_workspace, props, batch=3, world_size=2, rank=1), batch_size=3), 30
    )
    for w, r0, r1 in zip(whole, rank0, rank1, strict=True):
        assert torch.equal(w["input_ids"], torch.cat([r0["input_ids"], r1["input_ids"]]))


def test_an_exhausted_domain_starts_a_reshuffled_pass(tiny_workspace, caplog):
    ds = mixture(tiny_workspace, [1.0, 0.0, 0.0], batch=7)
    n = ds.sizes[0]
    with caplog.at_level(logging.WARNING, logger="shearing.data.mixture"):
        samples = batches(DataLoader(ds, batch_size=7), (2 * n) // 7 + 1)
    rows = [tuple(r.tolist()) for b in samples for r in b["input_ids"]]
    first, second = rows[:n], rows[n : 2 * n]
    assert len(set(first)) == len(set(rows)) == n  # every row once per pass, no padding
    assert sorted(first) == sorted(second) and first != second  # reshuffled
    assert "domain 'alpha' ran out of rows; starting pass 1 (reshuffled)" in caplog.text


def test_eval_set_reads_every_held_out_row_split_over_ranks(tiny_workspace):
    full = list(DomainEvalSet(tiny_workspace["data"], DOMAINS))
    assert len(full) == 12 and [int(full[i]["domain_idx"]) for i in (0, 4, 8)] == [0, 1, 2]
    parts = [
        list(DomainEvalSet(tiny_workspace["data"], DOMAINS, 3, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert len(parts[0]) == len(parts[1]) == 5  # 9 rows: one rank gets a padding row
    assert sum(int(x["domain_idx"]) == -1 for p in parts for x in p) == 1
    real = sorted(tuple(x["input_ids"].tolist()) for p in parts for x in p if x["domain_idx"] >= 0)
    expected = list(DomainEvalSet(tiny_workspace["data"], DOMAINS, 3))
    assert real == sorted(tuple(x["input_ids"].tolist()) for x in expected)


def rows_by_domain(samples) -> list[list[tuple]]:
    """Each domain's rows (as token tuples) in the order `samples` read them."""
    out: list[list[tuple]] = [[] for _ in DOMAINS]
    for batch in samples:
        for ids, d in zip(batch["input_ids"], batch["domain_idx"], strict=True):
            out[int(d)].append(tuple(ids.tolist()))
    return out


def test_a_following_run_reads_on_where_the_earlier_one_stopped(tiny_workspace):
    """data.rows_from: a run that follows another (other seed, other proportions) reads each
    domain's rows exactly as the earlier run would have read them had it gone on, so none of
    the earlier run's rows again; without it, a run with the earlier run's seed starts over."""
    earlier = mixture(tiny_workspace, [0.3, 0.3, 0.4], batch=4)  # seed 3
    it = iter(DataLoader(earlier, batch_size=4))
    read = rows_by_domain([next(it) for _ in range(6)])  # 24 samples
    went_on = rows_by_domain([next(it) for _ in range(6)])  # what it would have read next
    position = earlier.rows_read(24)
    assert position == [len(r) for r in read]  # counted by hand from the samples
    assert all(len(set(r)) == len(r) for r in read)  # no domain ran out yet

    following = DomainMixture(tiny_workspace["data"], DOMAINS, [0.5, 0.25, 0.25],
                              device_batch_size=4, seed=11, row_start=position,
                              row_seed=earlier.row_seed)  # fmt: skip
    after = rows_by_domain(batches(DataLoader(following, batch_size=4), 6))
    for d in range(len(DOMAINS)):
        assert not set(after[d]) & set(read[d]), DOMAINS[d]
        n = min(len(after[d]), len(went_on[d]))
        assert n > 0 and after[d][:n] == went_on[d][:n], DOMAINS[d]
    assert following.rows_read(24) == [p + len(r) for p, r in zip(position, after, strict=True)]
    # the same two runs without the hand-over: the second reads the first's rows again
    again = mixture(tiny_workspace, [0.5, 0.25, 0.25], batch=4)
    reread = rows_by_domain(batches(DataLoader(again, batch_size=4), 6))
    assert all(set(reread[d]) & set(read[d]) for d in range(len(DOMAINS)))
