"""Siamese word embeddings end to end: a tiny `rnnlab fit` (K x M batches, triplet loss) raises val/ap above the
untrained model's; `evaluate-retrieval` and `embed` take its checkpoint; a correspondence autoencoder fit on
same-word partners starts from it."""

import csv
import json

import pytest
import torch

from data.words import WordDataModule
from modules.retrieval import cosine_similarity_matrix, same_different_ap
from pipelines.base import load_module
from pipelines.cli import main
from pipelines.word_embedding import SiameseWordEmbedder
from tests.fixtures.word_audio import write_tone_words


@pytest.fixture(scope="module")
def words_dir(tmp_path_factory):
    """Tone words of 4 labels (9 train / 3 test each), recorded in turn by speakers s0, s1, s2."""
    root = write_tone_words(tmp_path_factory.mktemp("words") / "words", labels=(0, 1, 2, 3),
                            per_label={"train": 9, "test": 3})
    for split in ("train", "test"):
        meta = root / split / "metadata.jsonl"
        rows = [json.loads(x) for x in meta.read_text().splitlines()]
        meta.write_text("".join(json.dumps({**r, "speaker": f"s{r['index'] % 3}"}) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def siamese_run(words_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("siamese-runs")
    assert main(["fit", "-c", "defaults", "-c", "tiny/siamese.yaml", f"--data.init_args.data_dir={words_dir}",
                 f"--run.root={runs}", "--run.name=siamese"]) == 0
    return runs / "siamese"


def test_fit_raises_val_ap_above_the_untrained_model(siamese_run, words_dir):
    ckpt = torch.load(siamese_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["rnnlab"]["class_path"] == "pipelines.word_embedding.SiameseWordEmbedder"
    summary = json.loads((siamese_run / "summary.json").read_text())
    assert 0 <= summary["val/ap"] <= 1 and 0 <= summary["val/map"] <= 1
    epochs = [r for r in csv.DictReader((siamese_run / "metrics.csv").open()) if r["val/ap"]]
    assert len(epochs) == 4
    # The start: an untrained model of the same hyperparameters, seeded as the fit seeds its model.
    torch.manual_seed(1234)
    start = SiameseWordEmbedder(**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")})
    dm = WordDataModule(data_dir=str(words_dir), val_fraction=0.34)
    dm.setup("fit")
    segs = dm.datasets["val"].segments
    ap = same_different_ap(cosine_similarity_matrix(start.embed_waveforms([s.waveform for s in segs])),
                           [s.label for s in segs], higher_is_similar=True)["ap"]
    assert float(epochs[-1]["val/ap"]) > ap + 0.2, (ap, [r["val/ap"] for r in epochs])  # about 0.26 -> 0.97


def test_evaluate_retrieval_and_embed_take_a_siamese_checkpoint(siamese_run, words_dir, tmp_path, capsys):
    import pyarrow.parquet as pq

    ckpt = str(siamese_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "rows.json"
    assert main(["evaluate-retrieval", "--ckpt", f"siamese={ckpt}", "--data", str(words_dir), "--baselines",
                 "mfcc-downsample", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["mfcc-downsample", "siamese"]
    assert all(0 <= r["ap"] <= 1 and 0 <= r["ap_cross_speaker"] <= 1 and r["pairs"] == 66 for r in rows)
    assert "| siamese |" in capsys.readouterr().out
    emb = tmp_path / "emb.parquet"
    assert main(["embed", "--ckpt", ckpt, str(words_dir / "test"), "--out", str(emb)]) == 0
    assert {len(v) for v in pq.read_table(emb).column("vector").to_pylist()} == {8}


def test_correspondence_autoencoder_fit_from_the_siamese_encoder(siamese_run, words_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["fit", "-c", "defaults", "-c", "tiny/autoencoder.yaml", f"--data.init_args.data_dir={words_dir}",
                 "--model.init_args.target=same_word", "--data.init_args.pairs=true", "--trainer.max_epochs=1",
                 "--model.init_args.plot_examples=0",
                 f"--model.init_args.init_from={siamese_run / 'checkpoints' / 'best.ckpt'}",
                 f"--run.root={runs}", "--run.name=cae"]) == 0
    assert "kept fresh: model.decoder" in capsys.readouterr().out  # the encoder came from the Siamese run
    model = load_module(runs / "cae" / "checkpoints" / "last.ckpt")
    assert model.hparams.target == "same_word"
    losses = [float(r["train/loss"]) for r in csv.DictReader((runs / "cae" / "metrics.csv").open())
              if r.get("train/loss")]
    assert losses and all(x > 0 for x in losses)
    assert 0 <= json.loads((runs / "cae" / "summary.json").read_text())["val/map"] <= 1
