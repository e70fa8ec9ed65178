"""The maskable LLaMA decoder, its config, and Hugging Face / GGUF loading and saving."""

from shearing.models.config import LlamaShape
from shearing.models.hf_io import load_model, save_pretrained
from shearing.models.llama import KVCache, MaskableLlama, Masks

__all__ = ["KVCache", "LlamaShape", "Masks", "MaskableLlama", "load_model", "save_pretrained"]
