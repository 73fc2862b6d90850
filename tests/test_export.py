"""`export RUN`: the run's folds as one ONNX (run with onnxruntime) or TorchScript graph (torch.jit.load) give the
harness's own fold-averaged probabilities on the same test images (to 1e-4) and the same argmax."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from competition.cli import main
from competition.core.config import image_hw
from competition.core.runs import read_config, read_run
from competition.data import DataRoot, SegmentationDataset, eval_transform, write_sample_dataset
from competition.predict import fold_checkpoints, load_fold_model, predict_probs

TINY = ["--folds", "2", "--epochs", "1", "--image-size", "64", "--batch-size", "4", "--device", "cpu",
        "--set", "encoder=resnet18", "--set", "tracker=none", "--set", "overlays=0"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    data = write_sample_dataset(base / "data", n_train=8, n_test=5, size=72)
    runs = base / "runs"
    assert main(["train", "unet", "--data", str(data), "--runs-dir", str(runs), *TINY]) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir() and p.name.startswith("unet-")]
    return data, runs, run


def images(data: Path, run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images as the export takes them (uint8, resized) and as the harness feeds its models."""
    cfg = read_config(run)
    root = DataRoot(data)
    test = root.coco("test")
    resize = v2.Resize(image_hw(cfg), antialias=True)
    raw = SegmentationDataset(root.root, test.path, test.images, None, resize, "predict")
    fed = SegmentationDataset(root.root, test.path, test.images, None, eval_transform(cfg), "predict")
    return torch.stack([raw[i][0] for i in range(len(raw))]), torch.stack([fed[i][0] for i in range(len(fed))])


def harness_probs(run: Path, fed: torch.Tensor) -> np.ndarray:
    cfg = read_config(run) | {"channels_last": False}
    classes = len(read_run(run)["classes"])
    nets = [load_fold_model(cfg, path, classes, torch.device("cpu")) for _, path in fold_checkpoints(run)]
    return (sum(predict_probs(net, fed, amp="off", channels_last=False) for net in nets) / len(nets)).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_export_predicts_as_the_harness(trained, tmp_path, capsys, fmt):
    data, runs, run = trained
    out = tmp_path / f"model.{fmt}"
    capsys.readouterr()
    assert main(["export", run.name, "--runs-dir", str(runs), "--format", fmt, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["file"] == str(out) and result["folds"] == 2
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["image_size"] == [64, 64] and len(sidecar["classes"]) == 12 and sidecar["class_values"][0] == 0
    raw, fed = images(data, run)
    expected = harness_probs(run, fed)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(["probs"], {"images": raw.numpy()})[0]
        got2 = session.run(["probs"], {"images": raw[:2].numpy()})[0]  # another batch size
    else:
        graph = torch.jit.load(str(out))
        with torch.no_grad():
            got, got2 = graph(raw).numpy(), graph(raw[:2]).numpy()
    assert got.shape == (5, 12, 256, 256)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got2, expected[:2], atol=1e-4)
    top2 = np.sort(expected, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 1e-5  # float rounding can only flip exact near-ties
    assert decided.mean() > 0.9 and np.array_equal(got.argmax(1)[decided], expected.argmax(1)[decided])


def test_the_onnx_graph_refuses_another_input_size_and_a_bad_format_is_a_usage_error(trained, tmp_path, capsys):
    """The padding is traced for the run's size: another size is refused by onnxruntime, never mispredicted."""
    import onnxruntime

    data, runs, run = trained
    out = tmp_path / "fixed.onnx"
    assert main(["export", run.name, "--runs-dir", str(runs), "--out", str(out)]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(["probs"], {"images": np.zeros((1, 3, 80, 96), np.uint8)})
    with pytest.raises(SystemExit) as usage:
        main(["export", run.name, "--runs-dir", str(runs), "--format", "tflite"])
    assert usage.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_documented_example_writes_a_valid_submission(trained, tmp_path, monkeypatch, capsys):
    """docs/EXPORT.md's script, paths replaced, predicts with the export alone; `check` accepts its CSV."""
    data, runs, run = trained
    graph = tmp_path / "model.onnx"
    assert main(["export", run.name, "--runs-dir", str(runs), "--out", str(graph)]) == 0
    doc = (Path(__file__).resolve().parents[1] / "docs" / "EXPORT.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"runs/unet-20261203-101500-ab12/export/unet-20261203-101500-ab12.onnx"', repr(str(graph)))
    code = code.replace('"data/test.json"', repr(str(data / "test.json")))
    code = code.replace('"data/" +', f"{str(data) + '/'!r} +")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "EXPORT.md", "exec"), {})
    capsys.readouterr()
    assert main(["check", str(tmp_path / "submission.csv"), "--data", str(data)]) == 0
