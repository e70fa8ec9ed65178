"""The commands beside training (`shearing COMMAND`, or `python -m shearing.commands.X`):
convert a run to Hugging Face format, one-shot baselines, evaluation and downstream tasks,
activation sparsity, generation, plots, and the embedded default model (assets). Each
module's `main(argv)` is the command; `shearing.cli` names them all."""
