"""Checkpoint averaging: mean weights, metadata kept, optimiser state dropped, mismatches named."""

import pytest
import torch

from pipelines.commands.average import main
from pipelines.training.averaging import average_checkpoints


def _ckpt(path, w: float, b: int = 3, extra: str | None = None, shape=(2, 2)):
    sd = {"layer.weight": torch.full(shape, w), "steps": torch.tensor(b)}
    if extra:
        sd[extra] = torch.zeros(1)
    torch.save({"state_dict": sd, "hyper_parameters": {"vocab": {"kind": "char"}},
                "rnnlab": {"format": 1, "class_path": "pipelines.ctc.CTCSpeechRecognizer"}, "optimizer_states": [{"state": {}}], "epoch": int(w)}, path)
    return path


def test_mean_of_float_tensors_and_metadata_of_the_first(tmp_path):
    paths = [_ckpt(tmp_path / f"{i}.ckpt", w) for i, w in enumerate([1.0, 2.0, 6.0])]
    out = tmp_path / "avg.ckpt"
    average_checkpoints(paths, out)
    got = torch.load(out, weights_only=True)
    assert torch.allclose(got["state_dict"]["layer.weight"], torch.full((2, 2), 3.0))
    assert got["state_dict"]["layer.weight"].dtype == torch.float32
    assert got["state_dict"]["steps"].item() == 3 and got["state_dict"]["steps"].dtype == torch.int64
    assert got["hyper_parameters"] == {"vocab": {"kind": "char"}} and got["rnnlab"] == {"format": 1, "class_path": "pipelines.ctc.CTCSpeechRecognizer"}
    assert got["epoch"] == 1 and "optimizer_states" not in got
    assert got["averaged_from"] == [str(p) for p in paths]


def test_mismatched_checkpoints_are_named(tmp_path):
    a = _ckpt(tmp_path / "a.ckpt", 1.0)
    with pytest.raises(ValueError, match=r"b\.ckpt.*tensor names differ: other"):
        average_checkpoints([a, _ckpt(tmp_path / "b.ckpt", 1.0, extra="other")], tmp_path / "o.ckpt")
    with pytest.raises(ValueError, match=r"c\.ckpt.*layer\.weight: shape \(3, 2\)"):
        average_checkpoints([a, _ckpt(tmp_path / "c.ckpt", 1.0, shape=(3, 2))], tmp_path / "o.ckpt")
    with pytest.raises(ValueError, match=r"d\.ckpt: integer tensor steps differs"):
        average_checkpoints([a, _ckpt(tmp_path / "d.ckpt", 1.0, b=4)], tmp_path / "o.ckpt")
    assert not (tmp_path / "o.ckpt").exists()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    a = _ckpt(tmp_path / "a.ckpt", 1.0)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"rnnlab average: error: .*junk\.ckpt: not a readable checkpoint") as exc:
        main([str(a), str(tmp_path / "junk.ckpt"), "--out", str(tmp_path / "o.ckpt")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit, match=r"checkpoint not found: .*none\.ckpt") as exc:
        main([str(a), str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o.ckpt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("rnnlab average: error: ") for line in err)
    assert main([str(a), str(a), "--out", str(tmp_path / "o.ckpt")]) == 0
    assert "averaged 2 checkpoints" in capsys.readouterr().out
