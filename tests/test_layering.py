"""Runtimes live in their rooms: no runtime is named outside ``autoinfer/backends/``.

A scan (ast) of every module of ``autoinfer/`` and ``probes/`` outside ``autoinfer/backends/``:
its imports, and its string literals other than docstrings (a docstring may say what autoinfer
is a drop-in for), must not name a runtime: its package (onnxruntime, openvino, ncnn, pnnx,
tensorrt), its environment variables (ORT_*, OV_*, OPENVINO_*, TRT_*, NCNN_*) or its operator
domain (org.openvinotoolkit). What a runtime needs is declared by its backend and read through
the registry (``Backend.thread_env_vars``, ``Backend.domains``, ``Backend.child_env``).

The house keeps its sizes too: no function over 80 lines (backends included), no module outside
``autoinfer/backends/`` over 600 lines.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("onnxruntime", "openvino", "openvino_telemetry", "ncnn", "pnnx", "tensorrt")
RUNTIME_NAME = re.compile(
    r"(?i)\b(onnxruntime|openvino|ncnn|pnnx|tensorrt)\b|org\.openvinotoolkit"
    r"|\b(ORT|OV|OPENVINO|TRT|NCNN)_[A-Z]"
)


def _modules() -> list[str]:
    found = [*ROOT.glob("autoinfer/**/*.py"), *ROOT.glob("probes/**/*.py")]
    return sorted(str(p.relative_to(ROOT)) for p in found if "backends" not in p.relative_to(ROOT).parts)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                out.add(id(body[0].value))
    return out


def runtime_names(source: str) -> list[str]:
    """Imports of a runtime and string literals (not docstrings) naming one, in ``source``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in RUNTIME_PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] in RUNTIME_PACKAGES:
                found.append(f"import {node.module}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and RUNTIME_NAME.search(node.value)
        ):
            found.append(f"string {node.value[:60]!r}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    source = '''
"""A docstring may say onnxruntime."""
import onnxruntime
from openvino.runtime import Core
import os
env = {"OV_CPU_THREADS_NUM": 1, "ORT_NUM_THREADS": 2}
domain = "org.openvinotoolkit"
msg = f"TensorRT failed on {x}"
fine = ["OMP_NUM_THREADS", "cpu", "ORTHOGONAL_X"]
'''
    assert sorted(runtime_names(source)) == sorted(
        [
            "import onnxruntime",
            "import openvino.runtime",
            "string 'OV_CPU_THREADS_NUM'",
            "string 'ORT_NUM_THREADS'",
            "string 'org.openvinotoolkit'",
            "string 'TensorRT failed on '",
        ]
    )


def test_the_scan_covers_the_modules_it_should() -> None:
    modules = _modules()
    for expected in (
        "autoinfer/cli.py",
        "autoinfer/doctor.py",
        "autoinfer/model.py",
        "probes/detect.py",
        "probes/devices.py",
    ):
        assert expected in modules
    assert not any(m.startswith("autoinfer/backends/") for m in modules)


@pytest.mark.parametrize("module", _modules())
def test_no_runtime_is_named_outside_the_backends(module: str) -> None:
    found = runtime_names((ROOT / module).read_text(encoding="utf-8"))
    assert not found, f"{module} names a runtime: {found}"


def _fresh(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


_RUNTIMES_LOADED = f"sorted(k for k in sys.modules if k.split('.')[0] in {RUNTIME_PACKAGES!r})"


def test_probes_detect_imports_no_runtime_in_a_fresh_process() -> None:
    out = _fresh(
        "import sys, probes\nhw = probes.detect()\nassert hw.cpu.usable_cores >= 1\n"
        f"print({_RUNTIMES_LOADED})"
    )
    assert out == "[]", out


def test_the_registry_hooks_import_no_runtime_in_a_fresh_process() -> None:
    out = _fresh(
        "import sys, os\nfrom autoinfer import backends\n"
        "backends.child_environment(os.environ); backends.thread_env_vars()\n"
        "backends.known_domains()\n"
        f"print({_RUNTIMES_LOADED})"
    )
    assert out == "[]", out


def test_model_facts_accept_a_domain_a_backend_declares(tmp_path: Path) -> None:
    """model.py knows no runtime's domain: it reads ``Backend.domains`` through the registry."""
    import onnx
    from onnx import TensorProto, helper

    from autoinfer import backends
    from autoinfer.backends.onnxruntime import OnnxRuntimeBackend
    from autoinfer.errors import ModelError
    from autoinfer.model import load_facts

    graph = helper.make_graph(
        [helper.make_node("Magic", ["x"], ["y"], domain="com.example.fake")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.fake", 1)]
    )
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="unknown domain 'com.example.fake'"):
        load_facts(path)

    class FakeDomainBackend(OnnxRuntimeBackend):
        domains = ("com.example.fake",)

    backends.register("fake_domain", FakeDomainBackend())
    try:
        assert load_facts(path).inputs[0].name == "x"
    finally:
        backends.unregister("fake_domain")
    assert "org.openvinotoolkit" in backends.known_domains()  # the OpenVINO backend's own


# -- sizes ------------------------------------------------------------------------
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600  # outside autoinfer/backends/, where each runtime's module may be longer
# Functions over the limit for now, each with its reason; the list only ever shrinks.
LONG_FUNCTIONS: dict[str, str] = {}


def _all_modules() -> list[Path]:
    return sorted([*ROOT.glob("autoinfer/**/*.py"), *ROOT.glob("probes/**/*.py")])


def _long_functions(source: str) -> dict[str, int]:
    """Every function (methods and nested functions included) over the limit, by name,
    counted from its ``def`` line to its last line."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out[node.name] = n
    return out


def test_the_size_scan_counts_what_it_should() -> None:
    def body(indent: str, n: int) -> str:
        return "\n".join(f"{indent}x{i} = {i}" for i in range(n))

    at_limit = f"def fits():\n{body('    ', MAX_FUNCTION_LINES - 1)}\n"
    assert _long_functions(at_limit) == {}
    method = f"class C:\n    @staticmethod\n    def long():\n{body('        ', MAX_FUNCTION_LINES + 1)}\n"
    nested = f"def outer():\n    def inner():\n{body('        ', MAX_FUNCTION_LINES)}\n    return inner\n"
    assert _long_functions(method) == {"long": MAX_FUNCTION_LINES + 2}
    assert _long_functions(nested) == {"outer": MAX_FUNCTION_LINES + 3, "inner": MAX_FUNCTION_LINES + 1}


def test_no_function_is_over_the_limit() -> None:
    found = {}
    for path in _all_modules():
        rel = str(path.relative_to(ROOT))
        for name, n in _long_functions(path.read_text(encoding="utf-8")).items():
            found[f"{rel}::{name}"] = n
    over = {k: n for k, n in found.items() if k not in LONG_FUNCTIONS}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (split them along a real seam): {over}"
    fixed = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not fixed, f"within the limit now: remove them from LONG_FUNCTIONS: {fixed}"


def test_no_module_outside_the_backends_is_over_the_limit() -> None:
    over = {}
    for path in _all_modules():
        rel = path.relative_to(ROOT)
        if "backends" in rel.parts:
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            over[str(rel)] = n
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them along a real seam): {over}"


# -- what each room may import (docs/architecture.md) -----------------------------------
# The low layer imports nothing above it; the backends import the low layer, the hardware
# facts and the model's types, never the selection, the session or the command line; probes
# import no autoinfer.
LOW_LAYER = {
    "autoinfer.errors": set(),
    "autoinfer.objectives": set(),
    "autoinfer._hw": set(),
    "autoinfer._util": set(),
    "autoinfer.compare": set(),
    "autoinfer._lazy": {"autoinfer.errors"},
    "autoinfer.onnx_proto": set(),
}
BACKENDS_MAY_IMPORT = {
    "autoinfer.errors",
    "autoinfer.objectives",
    "autoinfer._hw",
    "autoinfer._util",
    "autoinfer._lazy",
    "autoinfer._proc",
    "autoinfer.compare",
    "autoinfer.model",
    "autoinfer.backends",
    "probes",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every autoinfer/probes module ``path`` imports, at any depth of its code (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from . import x" may import a submodule x
            found |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("autoinfer", "probes")}


def _owner(module: str, known: set[str]) -> str | None:
    """The known module ``module`` is, or lies in (a.b.c -> a.b when a.b is known)."""
    while module:
        if module in known:
            return module
        module = module.rpartition(".")[0]
    return None


def test_the_import_scan_resolves_relative_imports() -> None:
    got = imported_modules(ROOT / "autoinfer" / "backends" / "ncnn.py")
    assert "autoinfer.errors" in got and "autoinfer.backends.base" in got


def test_each_room_imports_only_what_it_may() -> None:
    modules = {_module_name(p): p for p in _all_modules()}
    known = set(modules) | {"autoinfer", "probes"}
    wrong = []
    for name, path in sorted(modules.items()):
        deps = {_owner(m, known) or m for m in imported_modules(path)} - {name, None}
        if name.startswith("probes"):
            bad = {d for d in deps if not d.startswith("probes")}
        elif name in LOW_LAYER:
            bad = deps - LOW_LAYER[name]
        elif name.startswith("autoinfer.backends"):
            bad = {d for d in deps if _owner(d, BACKENDS_MAY_IMPORT) is None and d != "autoinfer"}
        else:
            continue
        if bad:
            wrong.append(f"{name} imports {sorted(bad)}")
    assert not wrong, "\n".join(wrong)
