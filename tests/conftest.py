"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded default model as a Hugging Face directory (downloaded once, cached)."""
    from shearing.commands.assets import smollm2

    return smollm2()


WORDS = (
    "the cat dog sat on mat ran fast slow red blue green tree house river code def return "
    "import class data model prune gate layer head"
).split()
DOMAIN_WORDS = {"alpha": WORDS[:10], "beta": WORDS[8:20], "gamma": WORDS[15:]}


def write_corpus(root, docs_per_domain=120, seed=0):
    """A three-domain jsonl corpus in RedPajama's layout; returns {domain: [texts]}."""
    import json
    import random

    rng = random.Random(seed)
    texts = {}
    for domain, words in DOMAIN_WORDS.items():
        (root / domain).mkdir(parents=True, exist_ok=True)
        texts[domain] = [
            " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
            for _ in range(docs_per_domain)
        ]
        with open(root / domain / "part-0.jsonl", "w") as f:
            for text in texts[domain]:
                f.write(json.dumps({"text": text}) + "\n")
    return texts


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """A tiny corpus, a SentencePiece tokenizer trained on it, its MDS shards, and a
    tiny random LLaMA (GQA: 4 query heads over 2 key/value heads, 3 layers)."""
    import sentencepiece as spm
    import torch
    import transformers

    from shearing.data.prep import main as tokenize_main
    from shearing.models.config import DecoderShape
    from shearing.models.hf_io import model_from_state_dict, save_pretrained
    from tests.helpers import WORKSPACE_VOCAB, tiny_hf_config

    root = tmp_path_factory.mktemp("tiny")
    texts = write_corpus(root / "corpus")
    spm.SentencePieceTrainer.train(
        input=[str(root / "corpus" / d / "part-0.jsonl") for d in texts],
        model_prefix=str(root / "sp"),
        vocab_size=40,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    args = ["--input", str(root / "corpus"), "--output", str(root / "data")]
    args += ["--tokenizer", str(root / "sp.model"), "--seq-len", "32", "--eval-seqs", "4"]
    assert tokenize_main(args) == 0
    torch.manual_seed(0)
    cfg = tiny_hf_config(vocab_size=WORKSPACE_VOCAB)
    ref = transformers.LlamaForCausalLM(cfg)
    model = model_from_state_dict(DecoderShape.from_hf(cfg.to_dict()), dict(ref.state_dict()))
    save_pretrained(model, root / "model")
    return {
        "root": root,
        "texts": texts,
        "model": root / "model",
        "data": root / "data",
        "tokenizer": root / "sp.model",
    }


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server on 127.0.0.1 (moto's server mode, `tests.s3`), set as
    this process's S3 (`S3_ENDPOINT_URL`, dummy credentials) for the session."""
    from tests.s3 import S3Server, environment

    server = S3Server()
    with environment(server.env()):
        yield server
    server.close()


@pytest.fixture(scope="session")
def remote_corpus(s3, tiny_workspace):
    """The tiny workspace's corpus tokenized to s3://corpora/tiny with the same arguments
    as its local copy (`tiny_workspace["data"]`)."""
    from shearing.data.prep import main as tokenize_main

    url = s3.bucket("corpora") + "/tiny"
    args = ["--input", str(tiny_workspace["root"] / "corpus"), "--output", url]
    args += ["--tokenizer", str(tiny_workspace["tokenizer"]), "--seq-len", "32", "--eval-seqs", "4"]
    assert tokenize_main(args) == 0
    return url
