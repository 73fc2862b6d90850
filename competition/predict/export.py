"""A trained run as one self-contained graph: every fold's network, their softmax averaged (soft voting, as
`predict` does), for predicting without the harness installed (code competitions, serving).

The graph takes RGB images already resized to the run's training size, values 0..255, shape [B, 3, H, W]
(uint8; TorchScript also float); it normalises them as the harness does, runs each fold, resizes the logits
bilinearly to 256 x 256, softmaxes and averages. Output: probabilities [B, C, 256, 256] (float32), channel c
being the class `classes[c]` of the sidecar `FILE.json` (with the class values a submission CSV holds, the input
size and how to prepare an image: docs/EXPORT.md).

Formats: `onnx` (torch.onnx's TorchScript-based exporter, which every torch from 2.4 has) and `torchscript`
(torch.jit.trace). Both take any batch size and the run's image size only: the padding to the encoder's stride
is traced as constants, so another height or width would give wrong probabilities (ONNX refuses it; a dynamic
export was tried and gave different probabilities at 80 x 96, so it is not offered).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from competition.core.config import image_hw
from competition.core.errors import UserError, first_line
from competition.core.fileio import atomic_path
from competition.core.geometry import SUBMISSION_SIZE
from competition.core.log import Log
from competition.core.runs import read_config
from competition.data import MEAN, STD, DataRoot
from competition.predict.run import fold_checkpoints, load_fold_model, run_classes
from competition.submit import submission_values

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 18


class FoldMean(nn.Module):
    """Normalise 0..255 RGB, run every fold, bilinear to `size`, softmax, mean over the folds."""

    def __init__(self, nets: list[nn.Module], size: int = SUBMISSION_SIZE) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.size = size
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        total = torch.zeros(())
        for net in self.nets:
            logits = F.interpolate(net(x), size=(self.size, self.size), mode="bilinear", align_corners=False)
            total = total + logits.softmax(1)
        return total / len(self.nets)


def default_path(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / "export" / f"{Path(run_dir).name}{SUFFIX[fmt]}"


def export_run(
    run_dir: Path,
    fmt: str = "onnx",
    out: Path | None = None,
    data: str | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Export the run's folds as one graph to `out` (default runs/<id>/export/<id>.onnx|.pt) with its sidecar
    `<out>.json` (the class table read from the run's dataset, or `data`); returns where they went."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    root = DataRoot(Path(data or cfg["data"]))
    table = run_classes(run_dir, cfg, root)
    classes = list(table.names)
    checkpoints = fold_checkpoints(run_dir)
    device = torch.device("cpu")
    nets = [load_fold_model(cfg | {"channels_last": False}, path, len(classes), device) for _, path in checkpoints]
    graph = FoldMean(nets).eval()
    h, w = image_hw(cfg)
    example = torch.zeros(2, 3, h, w, dtype=torch.uint8)
    out = Path(out) if out is not None else default_path(run_dir, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter chatter (constant shapes, deprecations)
        try:
            if fmt == "torchscript":
                with torch.no_grad():
                    torch.jit.save(torch.jit.trace(graph, example, check_trace=False), str(tmp))
            else:
                _onnx(graph, example, tmp)
        except UserError:
            raise
        except Exception as e:  # an operator the exporter cannot write: one line, the format to try instead
            other = "torchscript" if fmt == "onnx" else "onnx"
            raise UserError(f"export {run_dir.name} as {fmt}: {first_line(e, 200)} (try --format {other})") from None
    dtype = "uint8" if fmt == "onnx" else "uint8 or float32"
    how = "RGB 0..255, resized to the run's image size as the harness does (bilinear, antialias)"
    sidecar = {
        "run": run_dir.name,
        "model": cfg["model"],
        "format": fmt,
        "folds": [fold for fold, _ in checkpoints],
        "input": {"shape": ["B", 3, h, w], "dtype": dtype, "values": how},
        "output": {
            "shape": ["B", len(classes), SUBMISSION_SIZE, SUBMISSION_SIZE],
            "dtype": "float32",
            "values": "softmax probabilities averaged over the folds",
        },
        "image_size": [h, w],
        "classes": classes,
        "class_values": submission_values(table, root.classes()).tolist(),  # channel c -> the CSV's value
    }
    meta = out.with_name(out.name + ".json")
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    log(f"exported {run_dir.name} ({len(nets)} folds, {fmt}, input B x 3 x {h} x {w}) -> {out}")
    return {"file": str(out), "sidecar": str(meta), "format": fmt, "folds": len(nets)}


def _onnx(graph: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX through torch.onnx's TorchScript-based exporter (no onnxscript needed), the batch dimension dynamic."""
    try:
        import onnx  # noqa: F401  (the exporter writes with it)
    except ImportError:
        raise UserError("--format onnx needs the onnx package (pip install onnx)") from None
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["probs"],
            dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
