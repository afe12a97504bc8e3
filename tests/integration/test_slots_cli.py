"""End to end through the `rnnlab` command: fit -> checkpoint -> test JSON -> predict; config errors."""

import json

import pytest

from tests.integration.helpers import read_json, rnnlab

TINY = ["-c", "defaults", "-c", "tiny/slots.yaml"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.fixtures.slot_corpus import write_slot_corpus

    root = tmp_path_factory.mktemp("slots-run")
    data = write_slot_corpus(root / "data")
    runs = root / "runs"
    proc = rnnlab("fit", *TINY, f"--data.init_args.data_dir={data}", "--trainer.max_epochs=12",
                  f"--run.root={runs}", "--run.name=tiny", "--run.wandb=offline",
                  env={"WANDB_MODE": ""})
    return {"data": data, "run": runs / "tiny", "out": proc.stdout + proc.stderr}


def test_fit_writes_checkpoint_config_metrics_and_learns(trained_run):
    run = trained_run["run"]
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    summary = read_json(run / "summary.json")
    # The generated corpus is fully learnable: a tiny BiLSTM gets the slots nearly right in 12 epochs.
    assert summary["val/slot_f1"] > 80.0, summary
    assert summary["val/intent_acc"] > 90.0, summary
    assert summary["best_checkpoint"].endswith("best.ckpt")
    assert "best checkpoint" in trained_run["out"]
    # W&B ran offline and still wrote its run directory for a later `wandb sync`.
    assert list((run / "wandb").glob("offline-run-*")), list(run.iterdir())


def test_gradient_norm_logged_every_step(trained_run):
    rows = (trained_run["run"] / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/grad_norm")
    values = [r.split(",")[col] for r in rows[1:] if r.split(",")[col]]
    # 96 train sentences / batch 8 = 12 steps per epoch, 12 epochs, log_every_n_steps=1.
    assert len(values) >= 100
    assert all(float(v) > 0 for v in values)


def test_test_command_prints_and_writes_json(trained_run, tmp_path):
    ckpt = trained_run["run"] / "checkpoints" / "best.ckpt"
    out = tmp_path / "m.json"
    proc = rnnlab("test", "--ckpt", str(ckpt), f"--run.metrics_file={out}",
                  f"--data.init_args.test_file={trained_run['data'] / 'test.jsonl'}")
    assert "test/slot_f1" in proc.stdout
    # Evaluating a trained run never overwrites its training log.
    assert "train/grad_norm" in (trained_run["run"] / "metrics.csv").read_text().splitlines()[0]
    metrics = read_json(out)["metrics"]
    assert metrics["test/slot_f1"] > 80.0 and 0 <= metrics["test/intent_acc"] <= 100


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_predict_tags_sentences_from_stdin_and_file(trained_run, tmp_path):
    ckpt = trained_run["run"] / "checkpoints" / "best.ckpt"
    proc = rnnlab("predict", "--ckpt", str(ckpt), stdin="i want to fly from boston to denver\n\nunknownword\n")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2  # the blank line is skipped
    assert lines[0].startswith("i/O want/O to/O fly/O from/O boston/B-fromloc.city_name to/O denver/B-toloc")
    assert lines[0].endswith("\tatis_flight")
    f = tmp_path / "s.txt"
    f.write_text("how much is a ticket from dallas to atlanta\n")
    res = json.loads(rnnlab("predict", "--ckpt", str(ckpt), str(f), "--json").stdout)
    assert res["intent"] == "atis_airfare" and len(res["tags"]) == len(res["words"]) == 9
    rows = tmp_path / "s.jsonl"  # slot data: its tokens are tagged, not the JSON text
    rows.write_text(json.dumps({"tokens": ["fly", "to", "denver"], "tags": ["O", "O", "B-toloc.city_name"]}) + "\n")
    res = json.loads(rnnlab("predict", "--ckpt", str(ckpt), str(rows), "--json").stdout)
    assert res["words"] == ["fly", "to", "denver"]


def test_config_typo_names_the_choices(slot_data_dir):
    proc = rnnlab("fit", *TINY, f"--data.init_args.data_dir={slot_data_dir}", "--model.init_args.encoder.cell=lstn",
                  check=False)
    assert proc.returncode != 0
    assert "lstn" in proc.stderr and "elman" in proc.stderr and "jordan" in proc.stderr


def test_print_config_composes_later_wins(slot_data_dir):
    proc = rnnlab("fit", *TINY, "-c", "slots", f"--data.init_args.data_dir={slot_data_dir}",
                  "--trainer.max_epochs=3", "--print_config")
    from pipelines.training.runconfig import parse_yaml

    cfg = parse_yaml(proc.stdout)
    assert cfg["trainer"]["max_epochs"] == 3  # command line beats both files
    assert cfg["model"]["init_args"]["encoder"]["hidden_size"] == 200  # slots.yaml came after tiny
    assert cfg["trainer"]["gradient_clip_val"] == 5.0  # from defaults


def test_missing_data_dir_is_one_line_error(tmp_path):
    proc = rnnlab("fit", *TINY, f"--data.init_args.data_dir={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("rnnlab fit: error: data directory not found")
    assert "Traceback" not in proc.stderr


def test_gpu_asked_without_gpu_is_one_line_error(slot_data_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = rnnlab("fit", *TINY, f"--data.init_args.data_dir={slot_data_dir}", "--trainer.accelerator=gpu", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--trainer.accelerator=cpu" in proc.stderr.strip().splitlines()[-1]


def test_offline_hub_without_local_copy_says_how_to_fix():
    proc = rnnlab("fit", "-c", "defaults", "-c", "slots", "--run.wandb=disabled", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "tuetschek/atis" in last and "DATA_DIR" in last and "Traceback" not in proc.stderr


def test_resume_continues_the_same_run_and_wandb_id(trained_run):
    run = trained_run["run"]
    run_id = (run / "wandb_id").read_text().strip()
    before = {p.name for p in (run / "wandb").glob("offline-run-*")}
    assert all(name.endswith(run_id) for name in before)
    rnnlab("fit", "-c", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
           "--trainer.max_epochs=13", "--run.wandb=offline", env={"WANDB_MODE": ""})
    after = {p.name for p in (run / "wandb").glob("offline-run-*")}
    assert after - before and all(name.endswith(run_id) for name in after)  # same W&B run id, no new run
    first = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert "0" in first and "11" in first  # the first run's log is kept
    resumed = [line.split(",")[0] for line in (run / "resume-1" / "metrics.csv").read_text().splitlines()[1:]]
    assert "12" in resumed and "0" not in resumed  # training went on from epoch 12 in the same run directory
    assert not (run.parent / "slots").exists()


def test_limit_batches_written_as_an_integer_counts_batches(slot_data_dir, tmp_path):
    # Lightning reads an int as a number of batches and a float as a fraction; "1" must stay one batch.
    import torch

    from pipelines.cli import main

    args = ["fit", "-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches", "1",
            f"--run.root={tmp_path}", "--run.name=one"]
    assert main(args) == 0
    ckpt = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 1
