"""The maskable decoder (`decoder`), its config and family table (`config`, `families`),
and Hugging Face / GGUF loading and saving (`hf_io`, `gguf_io`). Nothing is imported here,
so reading a config (`shearing.models.config`) does not load torch."""
