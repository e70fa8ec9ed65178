"""Corpora in object storage: a real S3-compatible server on 127.0.0.1 (`tests.s3`).

Tokenizing to a URL uploads the bytes a local output holds, the manifest last; a run reads
a remote corpus through streaming's cache the same, sample for sample, as a local copy,
under eviction too; a second run reads nothing but the manifest again; a shard that cannot
be fetched ends the run with one line.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from shearing.config import ConfigError
from shearing.data.corpus import MANIFEST, Corpus
from shearing.data.mixture import DomainEvalSet, DomainMixture
from shearing.files import KILL_POINT_ENV
from tests.helpers import train_here

#: streaming registers its datasets in shared memory: these tests share one xdist worker
pytestmark = pytest.mark.xdist_group("streaming")

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ["alpha", "beta", "gamma"]


def tokenize_args(ws, out, *extra) -> list[str]:
    args = ["--input", str(ws["root"] / "corpus"), "--output", str(out)]
    args += ["--tokenizer", str(ws["tokenizer"]), "--seq-len", "32", "--eval-seqs", "4"]
    return [*args, *extra]


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_tokenize_to_a_url_uploads_the_local_outputs_bytes_with_the_manifest_last(
    s3, remote_corpus, tiny_workspace
):
    local = tiny_workspace["data"]  # the same corpus and arguments, written to a folder
    names = files_of(local)
    assert [k.removeprefix("tiny/") for k in s3.keys("corpora", "tiny/")] == names
    for name in names:
        body = s3.client().get_object(Bucket="corpora", Key=f"tiny/{name}")["Body"].read()
        assert body == (local / name).read_bytes(), name
    puts = [path for method, path in s3.requests if method == "PUT" and "/corpora/tiny/" in path]
    assert len(puts) == len(names)
    assert puts[-1] == f"/corpora/tiny/{MANIFEST}"  # a cut-off upload is never a corpus


def test_a_cut_off_upload_is_no_corpus_and_a_remote_corpus_is_never_replaced(
    s3, tiny_workspace, tmp_path
):
    from shearing.data.prep import main as tokenize_main

    url = s3.bucket("corpora") + "/cut"
    env = {**os.environ, "PYTHONPATH": str(REPO), KILL_POINT_ENV: "uploaded"}
    cmd = [sys.executable, "data_prep/tokenize.py", *tokenize_args(tiny_workspace, url)]
    killed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    keys = s3.keys("corpora", "cut/")
    assert len(keys) == 12 and f"cut/{MANIFEST}" not in keys  # every shard and index, no manifest
    with pytest.raises(ConfigError, match="has no manifest.json"):
        Corpus(url, str(tmp_path / "cache")).manifest()
    assert not (tmp_path / "cache").exists()

    args = tokenize_args(tiny_workspace, url)
    assert tokenize_main(args) == 2  # objects without a manifest: only with --force
    assert tokenize_main([*args, "--force"]) == 0
    assert f"cut/{MANIFEST}" in s3.keys("corpora", "cut/")

    def etags():
        head = s3.client().head_object
        return {k: head(Bucket="corpora", Key=k)["ETag"] for k in s3.keys("corpora")}

    before = etags()
    assert tokenize_main([*args, "--force"]) == 2  # a corpus is there: never replaced
    assert etags() == before


@pytest.fixture(scope="module")
def small_shards(s3, tiny_workspace, tmp_path_factory):
    """The tiny corpus in shards of ~2 KB (about 30 rows: 14 per domain), written to a
    folder and to s3://corpora/small, so a small cache must evict."""
    import shearing.data.prep as prep
    from shearing.data.prep import main as tokenize_main

    root = tmp_path_factory.mktemp("small")
    url = s3.bucket("corpora") + "/small"
    kept, prep.SHARD_BYTES = prep.SHARD_BYTES, 2048
    try:
        assert tokenize_main(tokenize_args(tiny_workspace, root / "data")) == 0
        assert tokenize_main(tokenize_args(tiny_workspace, url)) == 0
    finally:
        prep.SHARD_BYTES = kept
    return root / "data", url


def test_remote_samples_equal_the_local_copys_under_eviction_with_workers(
    s3, small_shards, tmp_path
):
    local, url = small_shards
    shards = [p for p in local.rglob("shard.*.mds") if p.parent.parent.name == "train"]
    assert len(shards) >= 30
    indexes = sum(p.stat().st_size for p in local.glob("train/*/index.json"))
    largest = max(p.stat().st_size for p in shards)
    limit = indexes + 5 * largest  # streaming's least: the indexes and 4 shards
    cache = tmp_path / "cache"
    corpus = Corpus(url, str(cache), cache_limit=limit)
    props = [0.5, 0.3, 0.2]

    def batches(where):
        data = DomainMixture(where, DOMAINS, props, device_batch_size=8, seed=5)
        loader = DataLoader(data, batch_size=8, num_workers=2, prefetch_factor=2)
        return list(itertools.islice(loader, 60))  # 480 rows: a third of the corpus

    fetched = len(s3.gets("corpora/small/train/"))
    remote, copy = batches(corpus), batches(local)
    for a, b in zip(remote, copy, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["domain_idx"], b["domain_idx"])
        assert torch.equal(a["sample_index"], b["sample_index"])
    downloads = [p for p in s3.gets("corpora/small/train/")[fetched:] if "/shard." in p]
    assert len(downloads) > len(set(downloads))  # shards were evicted and fetched again
    held = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert held <= limit
    # the held-out rows likewise
    remote_eval = list(DomainEvalSet(corpus, DOMAINS))
    local_eval = list(DomainEvalSet(local, DOMAINS))
    assert len(remote_eval) == len(local_eval) == 12
    for a, b in zip(remote_eval, local_eval, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and a["domain_idx"] == b["domain_idx"]


def test_a_plain_path_as_remote_stands_for_a_shared_filesystem(tiny_workspace, tmp_path):
    shared = Corpus(str(tiny_workspace["data"]), str(tmp_path / "cache"))
    assert shared.manifest() == json.loads((tiny_workspace["data"] / MANIFEST).read_text())
    a = DomainMixture(shared, DOMAINS, [0.2, 0.3, 0.5], device_batch_size=4, seed=1)
    b = DomainMixture(tiny_workspace["data"], DOMAINS, [0.2, 0.3, 0.5], device_batch_size=4, seed=1)
    for x, y in itertools.islice(zip(a, b, strict=True), 64):
        assert torch.equal(x["input_ids"], y["input_ids"]) and x["domain_idx"] == y["domain_idx"]
    assert (tmp_path / "cache" / "train" / "alpha" / "index.json").is_file()  # copied, cached


RUN = ["yaml/tiny_prune.yaml", "max_duration=12ba", "eval_interval=6ba", "save_interval=12ba",
       "model.l0_module.lagrangian_warmup_steps=6"]  # fmt: skip


def test_a_run_reads_a_remote_corpus_once_then_from_its_cache(
    s3, remote_corpus, tiny_workspace, tmp_path
):
    cache = tmp_path / "cache"
    common = [*RUN, f"model.path={tiny_workspace['model']}", f"data.remote={remote_corpus}"]
    common.append(f"data.local={cache}")
    before = len(s3.gets("corpora/tiny/"))
    first = train_here([*common, f"save_folder={tmp_path / 'first'}"])
    assert first.returncode == 0, first.stderr[-3000:]
    fetched = s3.gets("corpora/tiny/")[before:]
    # the manifest, then each split's index and shard of every domain, each once
    assert sorted(fetched) == sorted(
        [f"/corpora/tiny/{MANIFEST}"]
        + [f"/corpora/tiny/{s}/{d}/{f}" for s in ("train", "eval") for d in DOMAINS
           for f in ("index.json", "shard.00000.mds")]
    )  # fmt: skip
    assert files_of(cache) == files_of(tiny_workspace["data"])  # a whole local copy

    before = len(s3.gets("corpora/tiny/"))
    second = train_here([*common, f"save_folder={tmp_path / 'second'}"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert s3.gets("corpora/tiny/")[before:] == [f"/corpora/tiny/{MANIFEST}"]

    def losses(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [r["loss/train/total"] for r in map(json.loads, lines) if "loss/train/total" in r]

    assert len(losses(tmp_path / "first")) == 12
    assert losses(tmp_path / "first") == losses(tmp_path / "second")  # same rows, same process


def test_a_shard_that_cannot_be_fetched_ends_the_run_with_one_line(
    s3, remote_corpus, tiny_workspace, tmp_path
):
    url = s3.bucket("corpora") + "/broken"
    for key in s3.keys("corpora", "tiny/"):  # a copy of the corpus, one shard lost
        if key != "tiny/train/beta/shard.00000.mds":
            source = {"Bucket": "corpora", "Key": key}
            s3.client().copy_object(Bucket="corpora", Key="broken/" + key[5:], CopySource=source)
    args = [*RUN, f"model.path={tiny_workspace['model']}", f"data.remote={url}"]
    args += [f"data.local={tmp_path / 'cache'}", "data.download_retry=1", "data.num_workers=1"]
    result = train_here(args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: data.remote: shard {url}/train/beta/shard.00000.mds could not be fetched into "
        f"{tmp_path / 'cache'}/train/beta after 1 attempts (not found)"
    )
    assert "Traceback" not in result.stderr


def test_a_cache_limit_below_four_shards_is_one_line_before_training(
    remote_corpus, tiny_workspace, tmp_path
):
    args = [*RUN, f"model.path={tiny_workspace['model']}", f"data.remote={remote_corpus}"]
    args += [f"data.local={tmp_path / 'cache'}", "data.cache_limit=1kb"]
    result = train_here(args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.cache_limit=1024 bytes is too small for this corpus (")
    assert last.endswith("streaming needs room for the indexes and four shards")
    assert "Traceback" not in result.stderr
