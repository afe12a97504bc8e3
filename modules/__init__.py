"""rnnlab.modules: pure-torch building blocks (no Lightning, datasets or wandb)."""
