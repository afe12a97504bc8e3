"""Small checkpoint-free tools: the encoder benchmark and the run summary table."""

import json

import yaml

from pipelines.commands.bench.encoder import bench_encoder
from pipelines.commands.summarize import summarize


def test_bench_encoder_reports_every_method_with_ratios():
    res = bench_encoder(layers=1, hidden=8, input_size=6, batch=3, max_frames=12, iters=1, warmup=0)
    methods = set(res["seconds_per_batch"])
    assert methods == {"nn.LSTM padded (inexact)", "RecurrentEncoder reverse (exact)",
                       "RecurrentEncoder packed (exact)"}
    assert all(v > 0 for v in res["seconds_per_batch"].values())
    assert res["ratio_vs_padded_nn_lstm"]["nn.LSTM padded (inexact)"] == 1.0


def test_summarize_picks_best_epoch_by_monitor(tmp_path):
    run = tmp_path / "atis-lstm"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"init_args": {"cell": "lstm", "bidirectional": True, "hidden_size": 64, "num_layers": 2}}}))
    (run / "summary.json").write_text(json.dumps({"monitor": "val/slot_f1", "train_time_s": 120.0}))
    (run / "metrics.csv").write_text(
        "epoch,val/slot_f1,val/intent_acc,val/exact_match\n0,80.0,90.0,50.0\n1,92.5,95.0,70.0\n2,91.0,96.0,71.0\n")
    table = summarize([run])
    row = table.splitlines()[-1]
    assert row == "| atis-lstm | BiLSTM-64 x2 | 1 | 92.50 | 95.00 | 70.00 | 2.0 |"


def test_summarize_maximises_joint_and_map_monitors(tmp_path):
    """A slot run chosen by val/joint (and an autoencoder by val/map) reports its highest epoch, slot columns."""
    run = tmp_path / "atis-combo"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"class_path": "pipelines.slot_filling.SlotFillingModule",
                   "init_args": {"cell": "lstm", "bidirectional": True, "hidden_size": 8}}}))
    (run / "summary.json").write_text(json.dumps({"monitor": "val/joint"}))
    (run / "metrics.csv").write_text("epoch,val/slot_f1,val/intent_acc,val/exact_match,val/joint\n"
                                     "0,90.0,90.0,50.0,90.0\n1,94.0,98.0,70.0,96.0\n2,95.0,95.0,71.0,95.0\n")
    assert summarize([run]).splitlines()[-1] == "| atis-combo | BiLSTM-8 x1 | 1 | 94.00 | 98.00 | 70.00 | - |"
    ae = tmp_path / "ae"
    ae.mkdir()
    (ae / "summary.json").write_text(json.dumps({"monitor": "val/map"}))
    (ae / "metrics.csv").write_text("epoch,val/map\n0,0.2\n1,0.6\n2,0.4\n")
    assert summarize([ae]).splitlines()[-1].split(" | ")[2:4] == ["1", "0.60"]


def test_summarize_gives_each_pipeline_its_own_table(tmp_path):
    slots, ctc = tmp_path / "slots-1", tmp_path / "ctc-1"
    for run, monitor, csv_text in [(slots, "val/slot_f1", "epoch,val/slot_f1,val/intent_acc,val/exact_match\n0,90,95,60\n"),
                                   (ctc, "val/cer", "epoch,val/cer,val/wer\n0,30.0,70.0\n")]:
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"hidden_size": 8}}}))
        (run / "summary.json").write_text(json.dumps({"monitor": monitor}))
        (run / "metrics.csv").write_text(csv_text)
    tables = summarize([slots, ctc]).split("\n\n")
    assert len(tables) == 2
    assert "val/slot_f1" in tables[0].splitlines()[0] and "slots-1" in tables[0] and "ctc-1" not in tables[0]
    assert "val/cer" in tables[1].splitlines()[0] and "ctc-1" in tables[1] and "val/slot_f1" not in tables[1]
