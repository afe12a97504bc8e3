"""rnnlab.pipelines: LightningModules, the CLI, configs and callbacks."""
