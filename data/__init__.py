"""rnnlab.data: datasets, tokenizers, collation and samplers."""
