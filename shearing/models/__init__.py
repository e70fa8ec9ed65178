"""The maskable LLaMA decoder, its config, and Hugging Face / GGUF loading and saving."""

from shearing.models.config import DecoderShape
from shearing.models.decoder import KVCache, MaskableDecoder, Masks
from shearing.models.hf_io import load_model, save_pretrained

__all__ = ["KVCache", "DecoderShape", "Masks", "MaskableDecoder", "load_model", "save_pretrained"]
