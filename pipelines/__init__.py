"""rnnlab.pipelines: task LightningModules (what configs and checkpoints name); training/, cli/, commands/."""
