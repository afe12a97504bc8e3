"""Attention seq2seq end to end: tiny models overfit G2P pairs and real utterances; CLI fit/test/predict."""

import json
import time

import lightning as L
import pytest
import torch

from data.g2p import G2PVocab, cmudict_path, read_pronunciations
from data.speech import SpeechDataModule
from modules.seq2seq import attention_loss
from pipelines.seq2seq import G2PModel, LASRecognizer
from tests.integration.helpers import arctic_subset, read_json, rnnlab

WORDS = ["cat", "dog", "house", "phone", "night", "water", "table", "music"]


def test_tiny_g2p_overfits_a_few_pairs(one_thread):
    prons, _ = read_pronunciations(cmudict_path())
    graphemes = ["<pad>", *sorted({c for w in WORDS for c in w})]
    phonemes = sorted({p for w in WORDS for p in prons[w][0]})
    vocab = G2PVocab(graphemes, phonemes)
    torch.manual_seed(0)
    model = G2PModel(vocab=vocab.to_dict(), embed_size=16, encoder={"hidden_size": 48}, speller_hidden=48,
                     attention_size=24, dropout=0.0, label_smoothing=0.0)
    inputs = torch.nn.utils.rnn.pad_sequence([torch.tensor(vocab.encode_word(w)) for w in WORDS], batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(vocab.phonemes.encode(prons[w][0])) for w in WORDS],
                                              batch_first=True)
    batch = {"inputs": inputs, "input_lengths": torch.tensor([len(w) for w in WORDS])}
    t_len = torch.tensor([len(prons[w][0]) for w in WORDS])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        logits, _ = model.model(batch["inputs"], batch["input_lengths"], targets, t_len)
        loss = attention_loss(logits, targets, t_len, model.model.speller.eos)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.05
    assert model.pronounce(WORDS) == [" ".join(prons[w][0]) for w in WORDS]
    assert model.pronounce(WORDS, beam_size=3) == [" ".join(prons[w][0]) for w in WORDS]
    with pytest.raises(ValueError, match="'ca7'.*outside the grapheme vocabulary"):
        model.pronounce(["ca7"])


def test_tiny_las_overfits_real_arctic_utterances(tmp_path, one_thread):
    data_dir = arctic_subset(tmp_path, 6)
    torch.manual_seed(0)
    dm = SpeechDataModule(dataset=None, data_dir=str(data_dir), train_split="train", val_split="train",
                          batch_size=6, bucketing=False)
    model = LASRecognizer(vocab=dm.vocab, frontend={"n_mels": 40, "stack_frames": 3, "spec_augment": False},
                          encoder={"hidden_size": 96, "num_layers": 2, "pyramid_layers": 1}, speller_hidden=96,
                          embed_size=32, attention_size=48, dropout=0.0, ctc_weight=0.3, label_smoothing=0.0,
                          val_examples=0,
                          attention_plots=0, optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    trainer = L.Trainer(max_steps=150, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, check_val_every_n_epoch=1000,
                        gradient_clip_val=5.0, default_root_dir=tmp_path, num_sanity_val_steps=0)
    t0 = time.time()
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    print(f"LAS overfit: {time.time() - t0:.1f}s, CER {metrics['val/cer']:.2f}%")
    assert metrics["val/cer"] < 10.0, metrics


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("g2p-runs")
    rnnlab("fit", "-c", "defaults", "-c", "tiny/g2p.yaml", "--data.init_args.max_words=300", f"--run.root={runs}",
           "--run.name=tiny")
    return runs / "tiny"


def test_g2p_cli_fit_writes_attention_maps_and_metrics(g2p_run):
    pngs = sorted((g2p_run / "attention").glob("val_epoch*.png"))
    assert [p.name for p in pngs] == ["val_epoch000.png", "val_epoch001.png"]
    assert pngs[0].read_bytes()[:4] == b"\x89PNG"
    summary = read_json(g2p_run / "summary.json")
    assert 0 <= summary["val/per"] <= 100 and 0 <= summary["val/wer"] <= 100
    ckpt = torch.load(g2p_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["vocab"]["kind"] == "g2p"


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_g2p_cli_test_and_predict(g2p_run, tmp_path):
    ckpt = str(g2p_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "m.json"
    config_before = (g2p_run / "config.yaml").read_bytes()
    rnnlab("test", "--ckpt", ckpt, f"--run.metrics_file={out}", "--decode.beam_size=3")
    assert (g2p_run / "config.yaml").read_bytes() == config_before  # evaluation leaves the run's config alone
    metrics = read_json(out)
    assert {"test/per", "test/wer"} <= set(metrics["metrics"])
    proc = rnnlab("predict", "--ckpt", ckpt, "-", stdin="cat\nDog\n\nw1th\nhouse\n", check=False)
    lines = proc.stdout.rstrip("\n").split("\n")
    assert [x.split("\t")[0] for x in lines] == ["cat", "Dog", "house"]  # as given
    assert all(len(x.split("\t")) == 2 for x in lines)
    assert proc.returncode == 1 and "'w1th'" in proc.stderr and "Traceback" not in proc.stderr
    rows = [json.loads(x) for x in rnnlab("predict", "--ckpt", ckpt, "--json", stdin="cat\n").stdout.splitlines()]
    assert rows[0]["word"] == "cat" and isinstance(rows[0]["phonemes"], str)
    proc = rnnlab("test", "--ckpt", ckpt, "--decode.lm=/nonexistent.arpa", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_las_cli_fit_test_and_transcribe(speech_corpus_dir, tmp_path):
    runs = tmp_path / "runs"
    rnnlab("fit", "-c", "defaults", "-c", "tiny/seq2seq.yaml", f"--data.init_args.data_dir={speech_corpus_dir}",
           f"--run.root={runs}", "--run.name=las")
    run = runs / "las"
    assert len(list((run / "attention").glob("val_epoch*.png"))) == 2
    import csv
    import math

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    losses = [float(r[k]) for r in rows for k in ("train/att_loss", "train/ctc_loss", "val/loss") if r.get(k)]
    assert losses and all(math.isfinite(x) for x in losses)
    # The joint model's unalignable count: once per epoch (2 epochs), not per step.
    counts = [r["train/unalignable"] for r in rows if r.get("train/unalignable")]
    assert len(counts) == 2 and all(float(c) == 0 for c in counts)
    assert read_json(run / "summary.json")["val/unalignable"] == 0
    ckpt = str(run / "checkpoints" / "best.ckpt")
    out = tmp_path / "m.json"
    rnnlab("test", "--ckpt", ckpt, f"--run.metrics_file={out}", "--decode.beam_size=2", "--decode.ctc_weight=0.5")
    assert {"test/cer", "test/wer"} <= set(read_json(out)["metrics"])
    files = sorted((speech_corpus_dir / "validation").glob("*.flac"))[:3]
    proc = rnnlab("predict", "--ckpt", ckpt, *map(str, files))
    assert [x.split("\t")[0] for x in proc.stdout.strip().splitlines()] == [str(f) for f in files]


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
