import pytest
import transformers

from shearing.models.config import DecoderShape
from tests.helpers import tiny_hf_config
from tests.models.test_decoder import LLAMA3_ROPE


@pytest.mark.parametrize("kv,tie", [(4, False), (2, True), (1, False)])
def test_num_params_matches_transformers(kv, tie):
    cfg = tiny_hf_config(num_key_value_heads=kv, tie_word_embeddings=tie)
    ref = transformers.LlamaForCausalLM(cfg)
    shape = DecoderShape.from_hf(cfg.to_dict())
    assert shape.num_params() == ref.num_parameters()
    embeddings = cfg.vocab_size * cfg.hidden_size * (1 if tie else 2)
    assert shape.num_params(include_embeddings=False) == ref.num_parameters() - embeddings


def test_head_dim_defaults_to_hidden_over_heads_and_is_kept_explicit():
    shape = DecoderShape.from_hf({**tiny_hf_config().to_dict(), "head_dim": None})
    assert shape.head_dim == 8
    pruned = shape.replace(hidden_size=16)
    assert pruned.to_hf()["head_dim"] == 8


def test_to_hf_roundtrips_through_transformers():
    shape = DecoderShape.from_hf(tiny_hf_config(tie_word_embeddings=True).to_dict())
    again = DecoderShape.from_hf(transformers.LlamaConfig(**shape.to_hf()).to_dict())
    assert again == shape


@pytest.mark.parametrize(
    "old_keys",
    [
        {"rope_theta": 5e5},
        {"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}},
        {"rope_theta": 5e5, "rope_scaling": LLAMA3_ROPE},
        {},
    ],
    ids=["theta", "linear-old-type-key", "llama3", "none"],
)
def test_a_transformers4_config_json_is_read_as_transformers5_reads_it(old_keys):
    """Hub checkpoints keep rope_theta / rope_scaling; transformers 5 moves them into
    rope_parameters. Our shape must hold what transformers' own config class holds."""
    old = {k: v for k, v in tiny_hf_config().to_dict().items() if k != "rope_parameters"}
    old.update(old_keys)
    expected = transformers.LlamaConfig.from_dict(old).rope_parameters
    shape = DecoderShape.from_hf(old)
    rope = shape.layer_rope(0)
    assert rope["rope_theta"] == expected["rope_theta"]
    assert rope["rope_type"] == expected["rope_type"]
    assert {k: v for k, v in rope.items() if k != "type"} == {
        k: v for k, v in expected.items() if k != "type"
    }
    assert "rope_theta" not in shape.to_hf() and "rope_scaling" not in shape.to_hf()


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"model_type": "gpt2"},
            "model_type='gpt2' is not supported (not a decoder family this model reproduces); "
            "supported: llama, internlm3, mistral",
        ),
        (
            {"model_type": "mixtral"},
            "model_type='mixtral' is not supported (a mixture-of-experts model",
        ),
        (
            {"model_type": "qwen3_5"},
            "model_type='qwen3_5' is not supported (a model with linear-attention",
        ),
        ({"model_type": "gemma3"}, "model_type='gemma3' is not supported (a multimodal model"),
        ({"model_type": "t5"}, "model_type='t5' is not supported (an encoder-decoder model)"),
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
            "rope_type 'yarn' is not supported",
        ),
        (
            {"hidden_act": "gelu_new"},
            "hidden_act='gelu_new' is not supported; supported: silu, gelu_pytorch_tanh",
        ),
        ({"num_key_value_heads": 3}, "must be a multiple of"),
    ],
)
def test_unrepresentable_config_is_a_one_line_error(change, message):
    cfg = {**tiny_hf_config().to_dict(), **change}
    with pytest.raises(ValueError) as err:
        DecoderShape.from_hf(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
