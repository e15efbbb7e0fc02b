"""The benchmark's model set, built by the test suite's zoo (tests/zoo.py: seeded weights,
no downloads)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the model builders live with the tests, their main users
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODELS_DIR = Path(__file__).resolve().parent / ".models"


@dataclass(frozen=True)
class Spec:
    name: str
    zoo: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    # concrete shapes for dynamic inputs (None: the model's shapes are fixed)
    shapes: dict[str, tuple[int, ...]] | None = None
    # the batch axis is dynamic: throughput is measured at several batches
    dynamic_batch: bool = False
    note: str = ""


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("tiny", "tiny", note="MatMul+Add+Relu on [1, 16]: per-call overhead"),
        Spec("mobilenetv2", "mobilenetv2", note="1x3x224x224"),
        Spec("efficientnet_b0", "efficientnet_b0", note="1x3x224x224"),
        Spec("resnet50", "resnet50", note="1x3x224x224"),
        Spec("bert_base", "bert_base", {"seq_len": 128}, note="12 layers, batch 1, seq 128"),
        Spec("lstm", "lstm", note="seq 32, batch 1, 64 -> 128"),
        Spec(
            "dynamic",
            "dynamic",
            shapes={"input": (1, 3, 224, 224)},
            dynamic_batch=True,
            note="input [N, 3, H, W] all dynamic; timed at 1x3x224x224",
        ),
        Spec("light_squeezenet", "light_squeezenet", note="onnx's light model, 1x3x224x224"),
        Spec("light_inception_v1", "light_inception_v1", note="onnx's light model, 1x3x224x224"),
        Spec("light_densenet121", "light_densenet121", note="onnx's light model, 1x3x224x224"),
    )
}
FULL = tuple(SPECS)
QUICK = ("tiny", "mobilenetv2", "dynamic", "light_squeezenet")


def _stamp(spec: Spec) -> str:
    import onnx
    import zoo

    h = hashlib.sha256(Path(zoo.__file__).read_bytes())
    h.update(json.dumps([spec.zoo, spec.kwargs, onnx.__version__], sort_keys=True).encode())
    return h.hexdigest()[:16]


def build(spec: Spec, directory: Path = MODELS_DIR) -> Path:
    """The model file, rebuilt only when the zoo or the arguments changed."""
    import zoo

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.name}.onnx"
    stamp_file = directory / f"{spec.name}.stamp"
    stamp = _stamp(spec)
    if path.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return path
    zoo.save(spec.zoo, path, seed=0, **spec.kwargs)
    stamp_file.write_text(stamp)
    return path


def feeds(spec: Spec, path: Path, batch: int | None = None) -> dict[str, Any]:
    """Seeded sample inputs at the spec's shapes (with the batch axis set to ``batch``)."""
    import onnx
    import zoo

    model = onnx.load(str(path), load_external_data=False)
    shapes = dict(spec.shapes or {})
    if batch is not None:
        shapes = {k: (batch, *v[1:]) for k, v in shapes.items()}
    return zoo.sample_inputs(model, seed=0, shapes=shapes or None)
