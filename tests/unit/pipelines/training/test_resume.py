"""The run that ``fit --ckpt_path last`` resumes, the resume command printed on SIGTERM, and "nothing to resume"."""

import contextlib
import io
import os

import pytest

from pipelines.cli import main
from pipelines.training.checkpointing import NothingToResume, find_last_checkpoint, resume_command


def _last(root, run, mtime):
    path = root / run / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_last_is_the_newest_last_ckpt_among_the_runs_the_pipeline_named_itself(tmp_path):
    _last(tmp_path, "ctc-20250101-120000", 300)
    newest = _last(tmp_path, "ctc-20240101-120000", 400)  # started earlier, saved later
    _last(tmp_path, "ctc-job77", 200)
    _last(tmp_path, "ctc-mine", 900)  # named by the user: resumed only by its name
    _last(tmp_path, "slots-20260101-120000", 900)  # another pipeline
    (tmp_path / "ctc-20270101-120000" / "checkpoints").mkdir(parents=True)  # nothing saved yet
    assert find_last_checkpoint(tmp_path, "ctc") == newest
    assert find_last_checkpoint(tmp_path, "ctc", "ctc-mine") == tmp_path / "ctc-mine" / "checkpoints" / "last.ckpt"
    with pytest.raises(NothingToResume, match=f"nothing to resume: {tmp_path}/other/checkpoints/last.ckpt does "
                                              "not exist"):
        find_last_checkpoint(tmp_path, "ctc", "other")
    with pytest.raises(NothingToResume, match="no .*/seq2seq-<date>-<time>/checkpoints/last.ckpt"):
        find_last_checkpoint(tmp_path, "seq2seq")


def test_resume_command_is_the_command_as_given_with_ckpt_path_last(tmp_path):
    saved = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert resume_command(["fit", "-c", "defaults", "--run.name=a b"], saved) == \
        "rnnlab fit -c defaults '--run.name=a b' --ckpt_path last"
    for given in (["--ckpt_path", "last"], ["--ckpt_path", str(saved)]):
        assert resume_command(["fit", *given, "-c", "x"], saved) == f"rnnlab fit {' '.join(given)} -c x"
    # Resuming from another checkpoint (say best.ckpt) again would lose the steps since: the saved one replaces it.
    assert resume_command(["fit", "--ckpt_path=runs/r/checkpoints/best.ckpt"], saved) == \
        f"rnnlab fit --ckpt_path={saved}"


def test_nothing_to_resume_is_one_line_and_exit_2(slot_data_dir, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(["fit", "-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
              f"--run.root={tmp_path}/runs", "--ckpt_path", "last"])
    assert stop.value.code == 2
    assert [x for x in err.getvalue().splitlines() if "error" in x or "Traceback" in x] == [
        f"rnnlab fit: error: --ckpt_path last: nothing to resume: no {tmp_path}/runs/slots-<date>-<time>/"
        "checkpoints/last.ckpt (a named run needs its --run.name; or give --ckpt_path FILE)"]
    assert not (tmp_path / "runs").exists()
