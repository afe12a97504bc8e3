"""The ``rnnlab`` subcommands outside LightningCLI, one module each with ``main(argv) -> int`` (see pipelines.cli)."""
