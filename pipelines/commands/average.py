"""``rnnlab average``: the mean weights of checkpoints of one model (e.g. a run's best epochs) as a new checkpoint.

Usage: rnnlab average CKPT... --out F.ckpt

The averaging itself is :func:`pipelines.training.averaging.average_checkpoints`, which ``fit
--run.average_best N`` also runs at the end of training.
"""

from __future__ import annotations

from pipelines.commands._common import ArgumentParser, fail
from pipelines.training.averaging import average_checkpoints


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab average", description="Average the weights of checkpoints of one "
                        "model (e.g. a run's best epochs) into a new checkpoint.")
    ap.add_argument("ckpts", nargs="+", help="checkpoints to average (e.g. runs/x/checkpoints/best-5/*.ckpt)")
    ap.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = ap.parse_args(argv)
    from pipelines.training.checkpointing import check_checkpoint

    try:
        classes = {str(c): check_checkpoint(c)["class_path"] for c in args.ckpts}  # rnnlab checkpoints only
        if len(set(classes.values())) > 1:
            first = args.ckpts[0]
            other = next(c for c in args.ckpts if classes[c] != classes[first])
            raise ValueError(f"{other}: a {classes[other].rsplit('.', 1)[-1]} checkpoint, but {first} is a "
                             f"{classes[first].rsplit('.', 1)[-1]}; average checkpoints of one model")
        average_checkpoints(args.ckpts, args.out)
    except (FileNotFoundError, ValueError) as e:
        fail("average", str(e))
    print(f"[rnnlab] averaged {len(args.ckpts)} checkpoints -> {args.out}")
    return 0
