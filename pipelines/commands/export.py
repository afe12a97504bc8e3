"""``rnnlab export``: a CTC or transducer checkpoint as standalone TorchScript and ONNX models.

Usage: rnnlab export --ckpt CKPT --out DIR [--formats torchscript onnx] [--opset N] [--onnx-exporter legacy|dynamo]

What is exported and how it is checked: :mod:`pipelines.inference.export` (the checkpoint, its tokenizer and
README) and :mod:`pipelines.inference.export_graphs` (the graphs and exporters). This module parses the options,
calls :func:`~pipelines.inference.export.export_checkpoint` and reports in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail
from pipelines.inference.export import export_checkpoint
from pipelines.inference.export_graphs import DEFAULT_OPSET, FORMATS, OUTPUTS


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab export",
                        description="Export a CTC checkpoint as a waveform -> log-probabilities model, or a "
                                    "transducer checkpoint as encoder, predictor and joiner graphs (with a "
                                    "README.md on greedy decoding with onnxruntime and numpy alone).")
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CTC or transducer run")
    ap.add_argument("--out", required=True,
                    help="output directory (created if needed; files of the same names in it are replaced)")
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    ap.add_argument("--onnx-exporter", choices=["legacy", "dynamo"], default="legacy",
                    help="torch.onnx.export with dynamo=False (default) or dynamo=True (needs onnxscript; fails "
                         "for recurrent models with torch 2.11)")
    args = ap.parse_args(argv)
    formats = tuple(dict.fromkeys(args.formats))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        # --out names a directory; an existing file there is never replaced (it may be the user's work).
        fail("export", f"--out {args.out} is an existing file; export writes a directory ({', '.join(OUTPUTS)}; "
                       f"for a transducer encoder, predictor and joiner .ts/.onnx instead of model.*): "
                       f"give a new or existing directory")
    try:
        meta = export_checkpoint(args.ckpt, args.out, formats=formats, opset=args.opset,
                                 onnx_exporter=args.onnx_exporter)
    except (FileNotFoundError, ValueError) as e:
        fail("export", str(e))
    except OSError as e:
        fail("export", f"cannot write to {args.out}: {e.strerror or e}")
    files = [f for v in meta["files"].values() for f in (v.values() if isinstance(v, dict) else [v])]
    diffs = ", ".join(f"{k} {v:.1e}" if not isinstance(v, dict) else
                      f"{k} " + " ".join(f"{g} {d:.1e}" for g, d in v.items())
                      for k, v in meta["max_abs_diff_vs_pytorch"].items())
    how = f" (ONNX: {meta['onnx']['exporter']}, opset {meta['onnx']['opset']})" if "onnx" in meta else ""
    print(f"[rnnlab] exported {', '.join(files)} to {args.out}; max |diff| vs PyTorch: {diffs}{how}",
          file=sys.stderr)
    return 0
