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
    try:
        average_checkpoints(args.ckpts, args.out)
    except (FileNotFoundError, ValueError) as e:
        fail("average", str(e))
    print(f"[rnnlab] averaged {len(args.ckpts)} checkpoints -> {args.out}")
    return 0
