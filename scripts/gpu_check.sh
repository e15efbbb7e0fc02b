#!/usr/bin/env bash
# Check autoinfer's NVIDIA path on a real NVIDIA machine; results go to a folder.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default ./gpu-check-out)
#
# Runs from the checkout (PYTHONPATH, nothing is installed) with the Python in
# $PYTHON (default python3). Needs nvidia-ml-py and numpy; uses cuda-bindings,
# PyTorch (a second opinion on CUDA's ordinals) and onnxruntime where they are
# importable, and says when they are not.
# Needs no TensorRT, no platformdirs and no network. Takes under ten minutes:
# each step has its own time limit.
#
# Steps (one JSON file each in OUT_DIR, and a line in OUT_DIR/summary.txt):
#   nvml     the NVML probe against raw pynvml: GPUs, bus ids, memory, MIG, timing
#   cuda     the cuda-bindings wrapper: bus-id/UUID placement, pinned copies,
#            the out-of-memory error, whether the GIL is released during a sync
#   doctor   `autoinfer doctor` as text and JSON
#   ort      ONNX Runtime's CUDA provider, when onnxruntime-gpu is importable
#   fixture  this machine recorded as a test fixture (OUT_DIR/fixture/<name>)
#
# Exit status: 0 when every step passed or was skipped with a reason, 1 when a
# step failed, 2 when there is no NVIDIA GPU here (nothing else is run).
set -u

OUT="${1:-./gpu-check-out}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 1; }
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export AUTOINFER_CACHE_DIR="$OUT/cache"   # no platformdirs needed
export GPU_CHECK_OUT="$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME LIMIT_S PYTHON_CODE: the code prints one line "PASS|FAIL|SKIP: why" last.
run_step() {
    local name="$1" limit="$2" code="$3" rc verdict
    echo "== $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$PY" -c "$code" > "$OUT/$name.log" 2>&1
    rc=$?
    verdict="$(grep -E '^(PASS|FAIL|SKIP|NOGPU):' "$OUT/$name.log" | tail -n 1)"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        verdict="FAIL: timed out after ${limit} s"
    elif [ -z "$verdict" ]; then
        verdict="FAIL: exit status $rc without a verdict (see $name.log)"
    elif [ "$rc" != 0 ] && [ "${verdict%%:*}" = PASS ]; then
        verdict="FAIL: exit status $rc after: $verdict"
    fi
    note "$name: $verdict"
    case "$verdict" in FAIL:*) FAILED=1 ;; NOGPU:*) return 2 ;; esac
    return 0
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm)"
    echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>} CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER-<unset>}"
    command -v nvidia-smi > /dev/null && nvidia-smi -L 2>&1 | sed 's/^/nvidia-smi: /'
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# Python shared by the steps: versions of what is importable, and JSON output.
COMMON='
import importlib, importlib.metadata as md, json, os, sys, time
OUT = os.environ["GPU_CHECK_OUT"]
def dump(name, data):
    with open(os.path.join(OUT, name + ".json"), "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
def version(*dists):
    for d in dists:
        try:
            return d + " " + md.version(d)
        except md.PackageNotFoundError:
            pass
    return None
def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)
'

# -- nvml: the probe against raw pynvml -----------------------------------------------------
run_step nvml 120 "$COMMON"'
try:
    import pynvml
except ImportError as exc:
    print("NOGPU: pynvml is not importable (pip install nvidia-ml-py):", exc); sys.exit(0)
t0 = time.perf_counter()
try:
    pynvml.nvmlInit()
except Exception as exc:
    print("NOGPU: nvmlInit failed, so there is no usable NVIDIA driver here:", exc); sys.exit(0)
init_s = time.perf_counter() - t0
raw = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    d = {"index": i, "name": text(pynvml.nvmlDeviceGetName(h)), "uuid": text(pynvml.nvmlDeviceGetUUID(h)),
         "bus_id": text(pynvml.nvmlDeviceGetPciInfo(h).busId),
         "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total >> 20,
         "cc": list(pynvml.nvmlDeviceGetCudaComputeCapability(h))}
    try:
        d["mig_mode"] = list(pynvml.nvmlDeviceGetMigMode(h))
        d["mig"] = []
        if d["mig_mode"][0] == 1:
            for s in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                try:
                    m = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, s)
                except pynvml.NVMLError:
                    continue
                d["mig"].append({"slot": s, "uuid": text(pynvml.nvmlDeviceGetUUID(m)),
                                 "name": text(pynvml.nvmlDeviceGetName(m)),
                                 "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(m).total >> 20})
    except pynvml.NVMLError as exc:
        d["mig_mode"] = "unsupported: %s" % exc
    try:
        d["persistence_mode"] = pynvml.nvmlDeviceGetPersistenceMode(h)
    except Exception as exc:
        d["persistence_mode"] = str(exc)
    raw.append(d)
pynvml.nvmlShutdown()
if not raw:
    print("NOGPU: NVML is loaded but lists no GPU"); sys.exit(0)
from probes import nvidia, detect
t0 = time.perf_counter(); gpus = nvidia.query(None); query_s = time.perf_counter() - t0
t0 = time.perf_counter(); hw = detect(refresh=True); detect_s = time.perf_counter() - t0
problems = []
if len(gpus) != len(raw):
    problems.append("probe lists %d GPUs, pynvml %d" % (len(gpus), len(raw)))
for g, r in zip(gpus, raw):
    want_mig = r["mig_mode"][0] == 1 if isinstance(r["mig_mode"], list) else None
    checks = {"name": (g.name, r["name"]), "uuid": (g.uuid, r["uuid"]),
              "bus_id": (g.pci_bus_id, nvidia.normal_bus_id(r["bus_id"])),
              "memory_mb": (g.memory_total_mb, r["memory_mb"]), "cc": (list(g.compute_capability), r["cc"]),
              "mig_enabled": (g.mig_enabled, want_mig),
              "mig": ([(m.uuid, m.memory_total_mb) for m in g.mig_instances],
                      [(m["uuid"], m["memory_mb"]) for m in r.get("mig", [])])}
    problems += ["GPU %d %s: probe %r, pynvml %r" % (g.index, k, a, b) for k, (a, b) in checks.items() if a != b]
problems += ["probe problem: " + p for p in getattr(gpus, "problems", ())]
dump("nvml", {"raw": raw, "probe": [vars(g) | {"mig_instances": [vars(m) for m in g.mig_instances]} for g in gpus],
              "nvmlInit_s": init_s, "probe_query_s": query_s, "detect_s": detect_s,
              "detect_notes": [vars(n) for n in hw.notes], "summary": hw.summary,
              "pynvml": version("nvidia-ml-py", "pynvml"), "problems": problems})
print("nvmlInit %.2f s, probe query %.2f s, detect %.2f s; MIG modes %s" % (
    init_s, query_s, detect_s, [r["mig_mode"] for r in raw]))
print("FAIL: " + "; ".join(problems) if problems else
      "PASS: %d GPU(s) agree with pynvml (names, UUIDs, bus ids, memory, MIG)" % len(raw))
'
if [ $? = 2 ]; then
    note "no NVIDIA GPU here: nothing else was checked (see $OUT/nvml.log)"
    exit 2
fi

# -- cuda: the cuda-bindings wrapper ---------------------------------------------------------
run_step cuda 180 "$COMMON"'
import threading
import numpy as np
from autoinfer.backends import _cuda
from probes import nvidia
try:
    cuda = _cuda.load()
except ImportError as exc:
    print("SKIP: cuda-bindings is not importable:", exc); sys.exit(0)
res = {"bindings": version("cuda-bindings", "cuda-python"), "driver": cuda.driver_version()}
devices = cuda.devices()
res["devices"] = [vars(d) for d in devices]
gpus = nvidia.query(None)
placed, why = _cuda.place(gpus, devices)
res["placed"] = {i: {"ordinal": p.ordinal, "mig": p.mig and p.mig.name, "memory_mb": p.memory_mb} for i, p in placed.items()}
res["not_placed"] = why
problems = []
if len(placed) != len(devices) and not any(g.mig_enabled for g in gpus):
    problems.append("%d CUDA devices but %d placed" % (len(devices), len(placed)))
if any(d.uuid is None for d in devices):
    problems.append("cudaGetDeviceProperties gave a short UUID for some device (truncation)")
try:  # a second opinion on ordinals, where PyTorch is here
    import torch
    res["torch"] = [{"ordinal": i, "bus": "%04x:%02x:%02x.0" % (p.pci_domain_id, p.pci_bus_id, p.pci_device_id),
                     "uuid": str(p.uuid)} for i, p in enumerate(map(torch.cuda.get_device_properties, range(torch.cuda.device_count())))]
    for t in res["torch"]:
        mine = next((d for d in devices if d.ordinal == t["ordinal"]), None)
        if mine is None or mine.pci_bus_id != t["bus"]:
            problems.append("ordinal %d: torch says bus %s, cuda-bindings %s" % (t["ordinal"], t["bus"], mine and mine.pci_bus_id))
except Exception as exc:
    res["torch"] = "not compared: %s: %s" % (type(exc).__name__, exc)
ordinal = devices[0].ordinal
cuda.set_device(ordinal)
# pinned copies, round trip
n = 64 << 20
host = cuda.malloc_host(n); back = cuda.malloc_host(n); dev = cuda.malloc(n)
stream = cuda.stream_create()
res["stream_handle"] = cuda.stream_handle(stream)
host.array[:] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
t0 = time.perf_counter()
cuda.copy_to_device(dev, host.ptr, n, stream); cuda.copy_to_host(back.ptr, dev, n, stream); cuda.synchronize(stream)
res["pinned_round_trip_GBps"] = 2 * n / (time.perf_counter() - t0) / 1e9
if not np.array_equal(host.array, back.array):
    problems.append("pinned round trip changed the bytes")
# out of memory
try:
    cuda.malloc(1 << 50)
    problems.append("a 1 PiB cudaMalloc succeeded")
except _cuda.CudaError as exc:
    res["oom"] = {"name": exc.name, "out_of_memory": exc.out_of_memory, "message": str(exc)}
    if not exc.out_of_memory:
        problems.append("out of memory reads as %s" % exc.name)
# the GIL during cudaStreamSynchronize: a Python thread counts while another waits on ~1 s of memsets
big = int(os.environ.get("GPU_CHECK_MEMSET_MB", "1024")) << 20
buf = cuda.malloc(big)
def enqueue(k):
    for _ in range(k):
        err = cuda.rt.cudaMemsetAsync(buf, 1, big, stream)[0]
        assert err == cuda.rt.cudaError_t.cudaSuccess, err
enqueue(4); cuda.synchronize(stream)
t0 = time.perf_counter(); enqueue(20); cuda.synchronize(stream); per = (time.perf_counter() - t0) / 20
k = max(20, min(20000, int(1.0 / max(per, 1e-6))))
def count(seconds, box):
    end = time.perf_counter() + seconds; c = 0
    while time.perf_counter() < end:
        c += 1
    box.append(c)
base = []; count(0.3, base); rate = base[0] / 0.3
box = []; stop = threading.Event()
def counter():
    c = 0
    while not stop.is_set():
        c += 1
    box.append(c)
enqueue(k)
th = threading.Thread(target=counter); th.start()
t0 = time.perf_counter(); cuda.synchronize(stream); sync_s = time.perf_counter() - t0
stop.set(); th.join()
ratio = box[0] / max(1.0, rate * sync_s)
res["gil"] = {"sync_s": sync_s, "memsets": k, "counter_during_sync": box[0], "counter_rate_alone": rate,
              "ratio": ratio, "released": ratio > 0.2}
if sync_s < 0.2:
    problems.append("the sync lasted only %.3f s; the GIL test is inconclusive" % sync_s)
elif ratio <= 0.2:
    problems.append("the GIL is held during cudaStreamSynchronize (counter ran at %.0f%%)" % (100 * ratio))
for p in (dev, buf):
    cuda.free(p)
cuda.free_host(host); cuda.free_host(back); cuda.stream_destroy(stream)
dump("cuda", res | {"problems": problems})
print(json.dumps({"placed": res["placed"], "gil": res["gil"], "GBps": res["pinned_round_trip_GBps"]}))
print("FAIL: " + "; ".join(problems) if problems else
      "PASS: %d device(s) placed by bus id; pinned copies, OOM error and GIL release OK (%s)" % (len(placed), res["bindings"]))
'

# -- doctor: text and JSON ---------------------------------------------------------------------
run_step doctor 120 "$COMMON"'
import subprocess
env = dict(os.environ)
text_run = subprocess.run([sys.executable, "-m", "autoinfer.cli", "doctor"], capture_output=True, text=True, env=env)
json_run = subprocess.run([sys.executable, "-m", "autoinfer.cli", "doctor", "--json"], capture_output=True, text=True, env=env)
open(os.path.join(OUT, "doctor.txt"), "w").write(text_run.stdout + text_run.stderr)
open(os.path.join(OUT, "doctor-out.json"), "w").write(json_run.stdout)
problems = []
if text_run.returncode not in (0, 1):
    problems.append("doctor exited %d" % text_run.returncode)
try:
    data = json.loads(json_run.stdout)
except ValueError as exc:
    data = None; problems.append("doctor --json is not JSON: %s" % exc)
if data is not None and "NVIDIA" not in json_run.stdout and "nvidia" not in json_run.stdout:
    problems.append("doctor --json does not mention the NVIDIA GPU")
print(text_run.stdout[-3000:])
print("FAIL: " + "; ".join(problems) if problems else "PASS: doctor text and JSON written (doctor.txt, doctor-out.json)")
'

# -- ort: ONNX Runtime's CUDA provider -------------------------------------------------------------
run_step ort 180 "$COMMON"'
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
eps = ort.get_available_providers()
if "CUDAExecutionProvider" not in eps:
    print("SKIP: this onnxruntime (%s) has no CUDAExecutionProvider: %s" % (version("onnxruntime-gpu", "onnxruntime"), eps)); sys.exit(0)
from autoinfer.backends import onnxruntime as ortb
from autoinfer.model import load_facts
from probes import detect
w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])], [w])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
path = os.path.join(OUT, "matmul.onnx"); onnx.save(m, path)
hw = detect(refresh=True)
cands = ortb.OnnxRuntimeBackend().candidates(load_facts(path), hw, "latency")
res = {"providers": eps, "candidates": [str(c) for c in cands], "runs": []}
x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
problems = []
for c in cands:
    if getattr(c, "backend", None) != "onnxruntime" or c.get("provider") != "CUDAExecutionProvider":
        continue
    s = ort.InferenceSession(path, providers=[("CUDAExecutionProvider", {"device_id": c.get("device_id")}), "CPUExecutionProvider"])
    got = s.run(None, {"x": x})[0]
    ok = s.get_providers()[0] == "CUDAExecutionProvider" and np.allclose(got, want, rtol=1e-3, atol=1e-3)
    res["runs"].append({"device": c.device, "device_id": c.get("device_id"), "providers": s.get_providers(), "ok": bool(ok)})
    if not ok:
        problems.append("%s (device_id %s) did not run on CUDA correctly" % (c.device, c.get("device_id")))
if not res["runs"]:
    problems.append("no CUDA candidate although the provider is listed")
dump("ort", res | {"problems": problems})
print("FAIL: " + "; ".join(problems) if problems else "PASS: CUDA provider ran on %s" % [r["device"] for r in res["runs"]])
'

# -- fixture: this machine as a test case ----------------------------------------------------------
run_step fixture 120 "$COMMON"'
import socket
from probes.testing import record, replay
from probes import detect
name = "recorded-" + socket.gethostname().split(".")[0].lower()
target = os.path.join(OUT, "fixture", name)
os.makedirs(target, exist_ok=True)
hw = record(target)
cuda_json = {"env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER") if k in os.environ}}
try:
    from autoinfer.backends import _cuda
    cuda = _cuda.load()
    devs = []
    for d in cuda.devices():
        props = cuda._check("cudaGetDeviceProperties", cuda.rt.cudaGetDeviceProperties(d.ordinal))
        prefix = "MIG-" if any(m.uuid and _cuda.bare_uuid(m.uuid) == d.uuid for g in hw.nvidia_gpus for m in g.mig_instances) else "GPU-"
        devs.append({"ordinal": d.ordinal, "pci_bus_id": d.pci_bus_id, "uuid": prefix + (d.uuid or ""),
                     "name": text(props.name).rstrip("\x00"), "memory_bytes": int(props.totalGlobalMem)})
    cuda_json["devices"] = devs
    with open(os.path.join(target, "cuda.json"), "w") as fh:
        json.dump(cuda_json, fh, indent=2)
except ImportError:
    pass
again = replay(target)
live = detect(refresh=True)
problems = []
if again.fingerprint != hw.fingerprint:
    problems.append("the recording replays to another fingerprint")
if [g.pci_bus_id for g in again.nvidia_gpus] != [g.pci_bus_id for g in live.nvidia_gpus]:
    problems.append("the recording lost the GPUs bus ids")
dump("fixture", {"directory": target, "summary": again.summary, "fingerprint": again.fingerprint, "problems": problems})
print("FAIL: " + "; ".join(problems) if problems else
      "PASS: recorded as %s (copy it to tests/fixtures/machines/ after zeroing UUIDs if they must stay private)" % target)
'

note "results in $OUT"
exit "$FAILED"
