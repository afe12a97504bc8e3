"""Audio embeddings and digit classification end to end: overfitting real recordings, `rnnlab fit` of the tiny
autoencoder and classifier, then `embed`, `evaluate-retrieval`, `linear-probe` and `test` from their checkpoints."""

import json

import pytest
import torch

from data.words import WordDataModule
from pipelines.cli import main
from tests.conftest import SHARED_DATA
from tests.fixtures.word_audio import copy_fsdd_subset, write_tone_words


@pytest.fixture(scope="module")
def words_dir(tmp_path_factory):
    """Three digits from the local FSDD copy (6 train / 3 test recordings each), or generated tone words."""
    root = tmp_path_factory.mktemp("words") / "words"
    if (SHARED_DATA / "fsdd" / "train" / "metadata.jsonl").is_file():
        return copy_fsdd_subset(SHARED_DATA / "fsdd", root)
    return write_tone_words(root)


def _batch(words_dir, n_per_label=4):
    dm = WordDataModule(data_dir=str(words_dir))
    segs = dm.segments("train")
    by_label: dict[str, list] = {}
    for s in segs:
        by_label.setdefault(s.label, []).append(s)
    chosen = [s for lab in sorted(by_label) for s in by_label[lab][:n_per_label]]
    lengths = torch.tensor([s.waveform.numel() for s in chosen])
    wavs = torch.zeros(len(chosen), int(lengths.max()))
    for b, s in enumerate(chosen):
        wavs[b, : lengths[b]] = s.waveform
    labels = torch.tensor([sorted(by_label).index(s.label) for s in chosen])
    return wavs, lengths, labels


def test_classifier_overfits_a_handful_of_recordings(words_dir):
    from modules.encoders import RecurrentEncoder
    from modules.frontend import LogMelFrontend
    from modules.heads import SequenceClassifier

    torch.manual_seed(0)
    wavs, lengths, labels = _batch(words_dir)
    model = SequenceClassifier(frontend=LogMelFrontend(sample_rate=8000, n_mels=20, spec_augment=False),
                               encoder=RecurrentEncoder(input_size=20, hidden_size=24, num_layers=1),
                               num_classes=3, pooling="mean")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(wavs, lengths), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(wavs, lengths).argmax(-1) == labels).float().mean().item()
    assert loss.item() < 0.1 * first and acc == 1.0


def test_autoencoder_overfits_a_handful_of_recordings(words_dir):
    from modules.autoencoder import SequenceAutoencoder, masked_mse
    from modules.encoders import RecurrentEncoder
    from modules.frontend import LogMelFrontend

    torch.manual_seed(0)
    wavs, lengths, _ = _batch(words_dir, n_per_label=2)
    model = SequenceAutoencoder(frontend=LogMelFrontend(sample_rate=8000, n_mels=20, spec_augment=False,
                                                        stack_frames=2),
                                encoder=RecurrentEncoder(input_size=40, hidden_size=32, num_layers=1),
                                embedding_size=32, decoder_hidden_size=64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(120):
        out = model(wavs, lengths)
        loss = masked_mse(out["reconstruction"], out["features"], out["frames"])
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Six segments, one vector each: the decoder learns to rebuild them well below the start.
    assert min(losses[-10:]) < 0.5 * losses[0]


@pytest.fixture(scope="module")
def ae_run(words_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("ae-runs")
    assert main(["fit", "-c", "defaults", "-c", "tiny/autoencoder.yaml", f"--data.init_args.data_dir={words_dir}",
                 f"--run.root={runs}", "--run.name=ae"]) == 0
    return runs / "ae"


def test_autoencoder_fit_logs_map_and_plots(ae_run):
    ckpt = torch.load(ae_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["rnnlab"]["class_path"] == "pipelines.autoencoder.AudioAutoencoder"
    assert ckpt["hyper_parameters"]["vocab"] == {"labels": ["0", "1", "2"]}
    summary = json.loads((ae_run / "summary.json").read_text())
    assert 0.0 <= summary["val/map"] <= 1.0 and summary["val/loss"] > 0
    pngs = sorted(p.name for p in (ae_run / "plots").glob("*.png"))
    assert pngs == ["val-epoch000-pca.png", "val-epoch000-reconstruction.png",
                    "val-epoch001-pca.png", "val-epoch001-reconstruction.png"]


def test_embed_writes_one_row_per_file(ae_run, words_dir, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "emb.parquet"
    assert main(["embed", "--ckpt", str(ae_run / "checkpoints" / "best.ckpt"), str(words_dir / "test"),
                 "--out", str(out)]) == 0
    table = pq.read_table(out)
    files = sorted(str(p) for p in (words_dir / "test").glob("*.wav"))
    assert table.column_names == ["path", "vector"] and table.column("path").to_pylist() == files
    vectors = table.column("vector").to_pylist()
    assert len(vectors) == 9 and {len(v) for v in vectors} == {8}
    # The same file embeds to (nearly) the same vector on its own: only the log-mel edge frames see the padding.
    single = tmp_path / "one.parquet"
    main(["embed", "--ckpt", str(ae_run / "checkpoints" / "best.ckpt"), files[4], "--out", str(single)])
    assert pq.read_table(single).column("vector").to_pylist()[0] == pytest.approx(vectors[4], abs=2e-3)


def test_evaluate_retrieval_scores_baselines_and_checkpoint(ae_run, words_dir, tmp_path, capsys):
    out = tmp_path / "rows.json"
    ckpt = str(ae_run / "checkpoints" / "best.ckpt")
    assert main(["evaluate-retrieval", "--ckpt", f"ae={ckpt}", "--data", str(words_dir), "--k", "1", "2",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| method | MAP | P@1 | P@2 | AP | AP cross-speaker | queries | µs/pair | seconds |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["mfcc-mean", "dtw", "dtw-cmvn", "mfcc-downsample", "ae"]
    assert all(0 <= r["map"] <= 1 and r["queries"] == 9 and 0 <= r["ap"] <= 1 and r["pairs"] == 36 for r in rows)
    with pytest.raises(SystemExit, match="unknown baseline"):
        main(["evaluate-retrieval", "--data", str(words_dir), "--baselines", "dtw,nope"])
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["evaluate-retrieval", "--data", str(words_dir), "--ckpt", str(tmp_path / "none.ckpt")])


def test_linear_probe_reports_accuracy(ae_run, words_dir, tmp_path):
    out = tmp_path / "probe.json"
    assert main(["linear-probe", "--ckpt", str(ae_run / "checkpoints" / "best.ckpt"), "--data", str(words_dir),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["train"] == 18 and res["test"] == 9
    assert 0 <= res["test_acc"] <= 100 and res["train_acc"] >= 90  # 18 points in 8-d: separable


def test_classifier_fit_test_and_wrong_checkpoint_kind(words_dir, tmp_path):
    runs = tmp_path / "runs"
    assert main(["fit", "-c", "defaults", "-c", "tiny/digits.yaml", f"--data.init_args.data_dir={words_dir}",
                 f"--run.root={runs}", "--run.name=clf"]) == 0
    ckpt = runs / "clf" / "checkpoints" / "best.ckpt"
    out = tmp_path / "test.json"
    assert main(["test", "--ckpt", str(ckpt), f"--run.metrics_file={out}"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert 0 <= metrics["test/acc"] <= 100 and metrics["test/loss"] > 0
    from pipelines.base import load_module

    model = load_module(ckpt)
    preds = model.classify_waveforms([torch.zeros(2000), torch.randn(3000) * 0.1])
    assert len(preds) == 2 and set(preds) <= {"0", "1", "2"}
    with pytest.raises(SystemExit, match="not an audio autoencoder"):
        main(["embed", "--ckpt", str(ckpt), str(words_dir / "test"), "--out", str(tmp_path / "x.parquet")])
