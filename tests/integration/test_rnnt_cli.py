"""RNN transducer end to end through `rnnlab`: fit a tiny model, transcribe with beam search, validate with beam
search and a word LM, test; and a learning check on ten real ARCTIC utterances."""

import json

import pytest

from tests.integration.helpers import read_json, rnnlab


@pytest.fixture(scope="module")
def rnnt_run(speech_corpus_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("rnnt-runs")
    rnnlab("fit", "-c", "defaults", "-c", "tiny/ctc.yaml", "-c", "tiny/rnnt.yaml",
           f"--data.init_args.data_dir={speech_corpus_dir}", f"--run.root={runs}", "--run.name=tiny")
    return runs / "tiny"


def test_fit_writes_a_transducer_checkpoint_and_its_losses(rnnt_run):
    import torch

    ckpt = torch.load(rnnt_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["rnnlab"]["class_path"] == "pipelines.transducer.TransducerSpeechRecognizer"
    assert any(k.startswith("model.joiner.") for k in ckpt["state_dict"])
    summary = read_json(rnnt_run / "summary.json")
    assert summary["val/rnnt_loss"] > 0 and summary["val/ctc_loss"] > 0 and 0 <= summary["val/cer"]


def test_transcribe_with_beam_matches_in_process_and_validate_test_take_beam_lm(rnnt_run, speech_corpus_dir,
                                                                               tmp_path):
    from modules.ngram_lm import train_ngram
    from pipelines.base import load_module

    ckpt = str(rnnt_run / "checkpoints" / "best.ckpt")
    files = sorted((speech_corpus_dir / "validation").glob("*.flac"))[:3]
    proc = rnnlab("transcribe", "--ckpt", ckpt, *map(str, files), "--json", "--beam", "4")
    rows = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files] and "RTF" in proc.stderr
    model = load_module(ckpt)
    assert [r["text"] for r in rows] == model.transcribe_files([str(f) for f in files],
                                                                decoder=model.make_decoder(beam_size=4))
    texts = [json.loads(x)["text"] for x in (speech_corpus_dir / "train" / "metadata.jsonl").read_text().splitlines()]
    arpa = tmp_path / "lm.arpa"
    train_ngram(texts, order=2).to_arpa(arpa)
    out = tmp_path / "val.json"
    rnnlab("validate", "--ckpt", ckpt, f"--run.metrics_file={out}", "--decode.beam_size=4", f"--decode.lm={arpa}")
    assert 0 <= read_json(out)["metrics"]["val/cer"]
    out = tmp_path / "test.json"
    proc = rnnlab("test", "--ckpt", ckpt, f"--run.metrics_file={out}")
    assert "test/cer" in proc.stdout and read_json(out)["metrics"]["test/wer"] >= 0


def test_tiny_transducer_learns_ten_arctic_utterances(tmp_path, one_thread):
    import lightning as L
    import torch

    from data.speech import SpeechDataModule
    from pipelines.transducer import TransducerSpeechRecognizer
    from tests.integration.helpers import arctic_subset

    data_dir = arctic_subset(tmp_path, 10)
    torch.manual_seed(0)
    dm = SpeechDataModule(dataset=None, data_dir=str(data_dir), train_split="train", val_split="train",
                          batch_size=10, bucketing=False)
    model = TransducerSpeechRecognizer(
        vocab=dm.vocab, n_mels=40, stack_frames=3, hidden_size=96, num_layers=2, dropout=0.0, spec_augment=False,
        val_examples=0, pred_hidden_size=64, pred_embed_size=32, joiner_size=64, pred_dropout=0.0,
        optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    trainer = L.Trainer(max_steps=300, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, check_val_every_n_epoch=1000,
                        gradient_clip_val=5.0, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    greedy = trainer.validate(model, datamodule=dm, verbose=False)[0]
    model.eval_decoder = model.make_decoder(beam_size=4)
    beam = trainer.validate(model, datamodule=dm, verbose=False)[0]
    print(f"rnnt overfit: loss {greedy['val/rnnt_loss']:.3f}/token, CER greedy {greedy['val/cer']:.1f}% "
          f"beam {beam['val/cer']:.1f}%")
    assert greedy["val/rnnt_loss"] < 0.1
    assert beam["val/cer"] < 10.0 and greedy["val/cer"] < 40.0


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
