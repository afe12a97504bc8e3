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
