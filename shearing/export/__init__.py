"""Files shipped inside exported checkpoints."""
