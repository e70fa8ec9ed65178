"""The config.json of the published models the real-scale recipes start from (the keys that
describe the model), so that their shapes, parameter counts and memory can be worked out
on any machine without the weights (`shearing memory --source NAME`, the recipe tests).
Each is copied from the model's card on the Hugging Face hub."""

from __future__ import annotations

#: meta-llama/Llama-2-7b-hf (6,738,415,616 parameters).
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "float16",
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "rope_theta": 10000.0,
}  # fmt: skip
#: princeton-nlp/Sheared-LLaMA-2.7B and -1.3B: Llama-2-7B's config at the pruned shapes.
SHEARED_2_7B = {**LLAMA2_7B, "hidden_size": 2560, "intermediate_size": 6912,
                "num_attention_heads": 20, "num_key_value_heads": 20}  # fmt: skip
SHEARED_1_3B = {**LLAMA2_7B, "hidden_size": 2048, "intermediate_size": 5504,
                "num_attention_heads": 16, "num_key_value_heads": 16,
                "num_hidden_layers": 24}  # fmt: skip
#: meta-llama/Llama-3.1-8B (8,030,261,248 parameters).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16",
}  # fmt: skip
#: Qwen/Qwen3-8B (8,190,735,360 parameters).
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
    "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "use_sliding_window": False, "sliding_window": None, "max_window_layers": 36,
    "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16",
}  # fmt: skip
#: mistralai/Mistral-7B-v0.1 (7,241,732,096 parameters).
MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}  # fmt: skip

#: By the name `shearing memory --source` takes.
PUBLISHED = {
    "Llama-2-7b-hf": LLAMA2_7B,
    "Sheared-LLaMA-2.7B": SHEARED_2_7B,
    "Sheared-LLaMA-1.3B": SHEARED_1_3B,
    "Llama-3.1-8B": LLAMA31_8B,
    "Qwen3-8B": QWEN3_8B,
    "Mistral-7B-v0.1": MISTRAL_7B_V01,
}

#: The real-scale recipes and what they start from: (source, distillation teacher or None,
#: GPUs per the recipe's header).
RECIPES = {
    "prune_2.7b.yaml": ("Llama-2-7b-hf", None, 8),
    "prune_1.3b.yaml": ("Llama-2-7b-hf", None, 8),
    "continue_2.7b.yaml": ("Sheared-LLaMA-2.7B", None, 8),
    "continue_1.3b.yaml": ("Sheared-LLaMA-1.3B", None, 8),
    "continue_2.7b_distill.yaml": ("Sheared-LLaMA-2.7B", "Llama-2-7b-hf", 8),
    "continue_1.3b_distill.yaml": ("Sheared-LLaMA-1.3B", "Llama-2-7b-hf", 8),
    "prune_llama3.1_8b.yaml": ("Llama-3.1-8B", None, 8),
    "prune_qwen3_8b.yaml": ("Qwen3-8B", None, 8),
    "relufy_7b.yaml": ("Llama-2-7b-hf", "Llama-2-7b-hf", 8),
    "prosparse_7b.yaml": ("Llama-2-7b-hf", None, 8),
    "drelu_mistral_7b.yaml": ("Mistral-7B-v0.1", None, 8),
}
