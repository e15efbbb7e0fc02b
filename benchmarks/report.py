"""The benchmark's results as Markdown, a chart, and the README's benchmark section."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from peers import LABELS, PEERS, precision_of

START, END = "<!-- bench:start -->", "<!-- bench:end -->"

METHOD = {
    "latency": "batch 1, the model's own input shapes (dynamic: 1x3x224x224); every peer "
    "loaded in one process and timed in interleaved rounds (rotating order, a 75 ms "
    "pause and one untimed call before each peer's turn); median and p90 of all "
    "timed calls",
    "correctness": "every peer's outputs against plain ONNX Runtime's on the same inputs: "
    "|out - ref| <= 1e-4 * max(1, max|ref|) + 1e-3 * |ref|; a wrong peer is "
    "reported as wrong and not timed",
    "throughput": "dynamic-batch models: items/s at the best of the batches tried, interleaved "
    "like latency; fixed-batch models: batch 1 sequential (1 / median latency)",
    "load": "each peer's own load (ONNX Runtime session, OpenVINO compile without a cache, "
    "ncnn from its converted files) in a fresh process after the runtime's import; "
    "autoinfer: first result = Session() with an empty cache + the first run() (in "
    "process, the median of 15, each on an empty cache, alternating with plain ONNX "
    "Runtime's load + first run, after one of each not counted), selection = the "
    "first start's background selection's own time (where its race was left undecided, "
    "the application's later starts follow, each a Session() + run() on that cache whose "
    "race goes on, until it is decided: 'N starts'; the latency, the prediction and the "
    "targets are those of the last start's choice), warm = Session() on a cache hit in a "
    "fresh process (best of 4); autoinfer's own work = the cold first result with the "
    "runtime's load and run stubbed out (reported beside the cold-start target, not judged); "
    "fresh-process cold start = an application's very first start: a new process (imports "
    "done, not counted) opens a Session() on an empty cache and runs once, against a new "
    "process's plain ONNX Runtime load + first run, one of each per load round, medians "
    "(its own target: a process's first Session() also starts the hardware probe and the "
    "shape-inference child, which the in-process samples after the first do not)",
    "memory": "peak resident set (VmHWM) of a fresh process per peer after loading and 4 "
    "runs; 'model' is that peak minus the resident set after the runtime's import",
    "overhead": "Session.run vs the chosen runner's run vs the runtime's own call on the same "
    "loaded object, in paired blocks of calls; when the machine's noise is wider "
    "than the target, autoinfer's own work is timed with the runtime replaced by a "
    "stub that returns the outputs",
    "pairs": "the targets' ratios (autoinfer / plain ONNX Runtime; autoinfer / the fastest "
    "correct fp32 peer) are median per-round ratios from a second set of interleaved rounds "
    "with the two alone, side by side (a 75 ms pause and one untimed call before each turn, "
    "~0.1 s of timed calls per turn, their median the turn's time), after the rounds of every "
    "peer",
    "regret": "autoinfer's latency / the fastest correct peer's that computes in fp32, "
    "as autoinfer does by default (a peer marked 'in bf16' computes in less)",
    "noise": "the spread of the per-round latency ratios behind a target (p25-p75)",
    "prediction": "the selection's own prediction of autoinfer / plain ONNX Runtime: the "
    "winner's median per-round ratio to the reference in the race, times (where a run is "
    "under 0.5 ms, and the race timed it) the reference as the session calls it over "
    "InferenceSession.run, alternating in the reference's turns",
}


def _f(x: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return fmt.format(x)


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 0.1:
        return f"{x * 1e3:.1f} us"
    if x < 10:
        return f"{x:.2f}"
    return f"{x:.1f}"


def _cell(p: dict[str, Any]) -> str:
    st = p.get("status")
    if st == "ok" and "latency_ms" in p:
        lat = p["latency_ms"]
        prec = precision_of(p)
        return f"{_ms(lat['median'])} ({_ms(lat['p90'])})" + ("" if prec == "fp32" else f" in {prec}")
    return {"wrong": "wrong", "unsupported": "unsupported", "failed": "failed"}.get(st or "", st or "-")


def _named_with_precision(p: dict[str, Any], name: str) -> str:
    prec = precision_of(p)
    return p.get("label", name) + ("" if prec == "fp32" else f" (computing in {prec})")


def peers_present(results: dict[str, Any]) -> list[str]:
    seen = {n for m in results["models"] for n in m.get("peers", {})}
    return [n for n in PEERS if n in seen]


def markdown(results: dict[str, Any]) -> str:
    mach = results["machine"]
    names = peers_present(results)
    L: list[str] = []
    v = mach["versions"]
    L.append(f"# Benchmark: {mach['slug']}")
    L.append("")
    la = [m.get("loadavg_start") for m in results["models"] if m.get("loadavg_start")]
    la_txt = ", ".join(f"{x[0]:.1f}" for x in la)
    L.append(
        f"{mach['cpu']} ({mach['vendor']}, {mach['usable_cores']} usable cores, "
        f"{mach['memory_gb']} GB), {mach['os']}; Python {mach['python']}, "
        f"onnxruntime {v.get('onnxruntime')}, openvino {v.get('openvino')}, "
        f"ncnn {v.get('ncnn')} + pnnx {v.get('pnnx')}, autoinfer {v.get('autoinfer')}. "
        f"Run {results['started']}, {results.get('wall_s', 0) / 60:.1f} min"
        + (" (--quick)" if results.get("quick") else "")
        + "."
    )
    L.append("")
    L.append(f"Machine load (1-min load average at each model's start): {la_txt}. Energy: {mach['energy']}.")
    L.append("")

    # latency
    L.append("## Latency at batch 1: median (p90), ms")
    L.append("")
    L.append("| model | " + " | ".join(LABELS[n] for n in names) + " | autoinfer chose | vs ORT | regret |")
    L.append("|---|" + "---|" * (len(names) + 3))
    for m in results["models"]:
        ps = m.get("peers", {})
        if m.get("error") and not ps:
            L.append(f"| {m['model']} | error: {m['error']} |")
            continue
        fastest = m.get("fastest_peer")
        cells = []
        for n in names:
            c = _cell(ps.get(n, {}))
            if n == fastest:
                c = f"**{c}**"
            cells.append(c)
        a = m.get("autoinfer", {})
        L.append(
            f"| {m['model']} | " + " | ".join(cells) + f" | {a.get('running', '-')} | "
            f"{_f(m.get('vs_ort'), '{:.3f}x')} | {_f(m.get('regret'), '{:.3f}x')} |"
        )
    g = results.get("geomean_speedup_vs_ort")
    L.append("")
    L.append(
        f"Bold: the fastest correct fp32 peer other than autoinfer ('in bf16': the peer computes "
        f"in bf16; autoinfer computes in fp32 unless `precision=` allows less). Geometric-mean speedup of "
        f"autoinfer over plain ONNX Runtime: **{_f(g, '{:.3f}x')}**. "
        "'unsupported'/'failed'/'wrong' peers are listed with their reasons below."
    )
    L.append("")

    # throughput
    L.append("## Throughput, items/s")
    L.append("")
    L.append("| model | how | " + " | ".join(LABELS[n] for n in names) + " |")
    L.append("|---|---|" + "---|" * len(names))
    for m in results["models"]:
        ps = m.get("peers", {})
        if not ps:
            continue
        dyn = any("throughput" in p for p in ps.values())
        cells = []
        for n in names:
            p = ps.get(n, {})
            if dyn and p.get("throughput", {}).get("best_items_per_s"):
                t = p["throughput"]
                cells.append(f"{t['best_items_per_s']:.1f} @{t['best_batch']}")
            elif not dyn and p.get("status") == "ok" and "latency_ms" in p:
                cells.append(f"{1e3 / p['latency_ms']['median']:.1f}")
            else:
                cells.append("-")
        how = "best batch of " + "/".join(str(b) for b in _batches(ps)) if dyn else "batch 1, sequential"
        L.append(f"| {m['model']} | {how} | " + " | ".join(cells) + " |")
    L.append("")

    # load
    L.append("## Load time, s (fresh process)")
    L.append("")
    L.append(
        "| model | "
        + " | ".join(LABELS[n] for n in names if n != "autoinfer")
        + " | ncnn convert | autoinfer cold first result (plain ORT) | autoinfer "
        "selection (predicted vs ORT) | autoinfer warm Session() | "
        "warm in-process (own load) |"
    )
    L.append("|---|" + "---|" * (len(names) - 1 + 5))
    for m in results["models"]:
        ps = m.get("peers", {})
        if not ps:
            continue
        a = m.get("autoinfer", {})
        cells = [
            _f(ps.get(n, {}).get("fresh_process", {}).get("load_s"), "{:.3f}")
            for n in names
            if n != "autoinfer"
        ]
        cells.append(_f(ps.get("ncnn", {}).get("convert_and_load_s"), "{:.1f}"))
        cells.append(f"{_f(a.get('first_result_s'), '{:.3f}')} ({_f(a.get('ort_first_result_s'), '{:.3f}')})")
        starts = f", {a['starts']} starts" if a.get("starts", 1) > 1 else ""
        cells.append(
            f"{_f(a.get('cold_select_s'), '{:.1f}')} ({_f(a.get('predicted_vs_ort'), '{:.3f}x')}{starts})"
        )
        cells.append(_f(a.get("warm_session_fresh_s"), "{:.3f}"))
        cells.append(
            f"{_f(a.get('warm_session_in_process_s'), '{:.3f}')} "
            f"({_f(a.get('own_load_in_process_s'), '{:.3f}')})"
        )
        L.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    L.append("")

    # memory
    L.append("## Peak resident memory, MB: process peak (model's share)")
    L.append("")
    L.append("| model | " + " | ".join(LABELS[n] for n in names) + " |")
    L.append("|---|" + "---|" * len(names))
    for m in results["models"]:
        ps = m.get("peers", {})
        if not ps:
            continue
        cells = []
        for n in names:
            fp = ps.get(n, {}).get("fresh_process", {})
            cells.append(f"{fp['peak_mb']:.0f} ({fp['model_mb']:.0f})" if "peak_mb" in fp else "-")
        L.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    L.append("")
    energy = [
        (m["model"], n, p["fresh_process"]["energy_j_per_inference"])
        for m in results["models"]
        for n, p in m.get("peers", {}).items()
        if p.get("fresh_process", {}).get("energy_j_per_inference")
    ]
    L.append("## Energy")
    L.append("")
    if energy:
        L.append("| model | peer | J per inference |")
        L.append("|---|---|---|")
        for mod, n, e in energy:
            L.append(f"| {mod} | {LABELS[n]} | {e:.4f} |")
    else:
        L.append(f"Energy per inference: {mach['energy']}.")
    L.append("")

    # autoinfer's own
    L.append("## autoinfer's own costs")
    L.append("")
    ov = results.get("overhead") or {}
    if ov:
        L.append(
            "| model | chosen | Session.run | runner.run | runtime's own call | overhead "
            "(session - raw) | paired IQR | isolated: session layer + runner layer on tiny | "
            "target uses |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, o in ov.items():
            if not o:
                continue
            d = o["direct"]
            key = next(k for k in o if k.startswith("direct_session_minus_"))
            dd = o[key]
            iso = o["isolated_session_layer"]["median"]
            rl = o.get("runner_layer_on_tiny", {}).get("median")
            L.append(
                f"| {name} | {o['backend']} | {d['session']:.1f} us | {d['runner']:.1f} us | "
                f"{_f(d.get('raw'), '{:.1f} us')} | {dd['median']:.2f} us | "
                f"{dd['p75'] - dd['p25']:.1f} us | {iso:.2f} + {_f(rl, '{:.2f}')} us | "
                f"{o['overhead_us']:.2f} us ({o['overhead_from']}) |"
            )
        L.append("")
        L.append("The runtime's own call: " + "; ".join(f"{k}: {o['raw']}" for k, o in ov.items() if o) + ".")
        L.append("")
    for m in results["models"]:
        if "gflops" in m:
            pk = results["machine"]["peak"]
            L.append(
                f"Compute-bound check, {m['model']} ({m['flops'] / 1e9:.2f} GFLOP per "
                f"inference): achieved GFLOP/s against an fp32 peak of "
                f"{pk['gflops']:.0f} GFLOP/s ({pk['assumption']}):"
            )
            L.append("")
            L.append("| peer | GFLOP/s | % of peak |")
            L.append("|---|---|---|")
            for n, gf in sorted(m["gflops"].items(), key=lambda kv: -kv[1]):
                L.append(f"| {LABELS[n]} | {gf:.1f} | {100 * gf / pk['gflops']:.0f}% |")
            L.append("")

    # targets
    L.append("## Targets")
    L.append("")
    L.append("| target | result | value | notes |")
    L.append("|---|---|---|---|")
    for t in results.get("targets", []):
        L.append(f"| {t['target']} | **{t['status']}** | {t['value']} | {t['detail']} |")
    L.append("")

    # noise and reasons
    L.append("## Noise")
    L.append("")
    L.append(
        "| model | rounds | autoinfer / ORT per round: median [p25, p75] | "
        "latency MAD / median per peer | load average start -> end |"
    )
    L.append("|---|---|---|---|---|")
    for m in results["models"]:
        ps = m.get("peers", {})
        r = ps.get("autoinfer", {}).get("ratio_to_ort_rounds", {})
        mads = ", ".join(
            f"{n} {100 * p['latency_ms']['mad'] / p['latency_ms']['median']:.0f}%"
            for n, p in ps.items()
            if "latency_ms" in p
        )
        la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
        L.append(
            f"| {m['model']} | {m.get('latency_rounds', '-')} | "
            + (f"{r['median']:.3f} [{r['p25']:.3f}, {r['p75']:.3f}]" if "p25" in r else "-")
            + f" | {mads} | {_f(la0[0] if la0 else None, '{:.1f}')} -> "
            f"{_f(la1[0] if la1 else None, '{:.1f}')} |"
        )
    L.append("")
    reasons = [
        (m["model"], n, p["status"], p.get("reason", ""))
        for m in results["models"]
        for n, p in m.get("peers", {}).items()
        if p.get("status") in ("unsupported", "failed", "wrong")
    ]
    if reasons:
        L.append("## Peers that did not run correctly")
        L.append("")
        for mod, n, st, why in reasons:
            L.append(f"- {mod}, {LABELS[n]}: {st}, because {why}")
        L.append("")
    L.append("## Method")
    L.append("")
    for k, text in results.get("method", METHOD).items():
        L.append(f"- {k}: {text}.")
    return "\n".join(L) + "\n"


def _batches(ps: dict[str, Any]) -> list[int]:
    bs: set[int] = set()
    for p in ps.values():
        for k in p.get("throughput", {}).get("batches", {}):
            if k.isdigit():
                bs.add(int(k))
    return sorted(bs)


def chart(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = peers_present(results)
    rows = [m for m in results["models"] if m.get("peers")]
    if not rows:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(rows) + 3), 9))
    width = 0.8 / max(1, len(names))
    colors = plt.get_cmap("tab10")
    for ax, relative in zip(axes, (False, True), strict=True):
        for j, n in enumerate(names):
            xs, ys = [], []
            for i, m in enumerate(rows):
                p = m["peers"].get(n, {})
                ort = m["peers"].get("ort", {}).get("latency_ms", {}).get("median")
                if p.get("status") != "ok" or "latency_ms" not in p:
                    continue
                med = p["latency_ms"]["median"]
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(ort / med if relative and ort else med)
            ax.bar(
                xs,
                ys,
                width,
                label=LABELS[n],
                color=colors(j),
                edgecolor="black" if n == "autoinfer" else None,
                linewidth=1.2 if n == "autoinfer" else 0,
            )
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([m["model"] for m in rows], rotation=20, ha="right")
        if relative:
            ax.axhline(1.0, color="gray", linewidth=0.8)
            ax.set_ylabel("speedup over plain ONNX Runtime (x)")
        else:
            ax.set_yscale("log")
            ax.set_ylabel("median latency, ms (log)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(
        f"Latency at batch 1 on {results['machine']['slug']} (missing bar: unsupported, failed or wrong)"
    )
    axes[0].legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def readme_section(results: dict[str, Any], link: str) -> str:
    mach = results["machine"]
    L = [
        f"Measured by `make bench` on {mach['cpu']} ({mach['usable_cores']} usable cores), "
        f"{results['started'][:10]}. Median latency at batch 1 in ms; every runtime's outputs "
        "are checked against plain ONNX Runtime's, and all are timed in interleaved rounds "
        "in one process. The speedup is the median per-round ratio from further rounds of "
        "autoinfer and plain ONNX Runtime alone, side by side.",
        "",
        "| model | plain ONNX Runtime | fastest other runtime | autoinfer | autoinfer chose | "
        "speedup vs ORT |",
        "|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        ps = m.get("peers", {})
        lat = {
            n: p["latency_ms"]["median"]
            for n, p in ps.items()
            if p.get("status") == "ok" and "latency_ms" in p
        }
        f = m.get("fastest_peer")
        r = m.get("fastest_reduced_peer")
        less = (
            f"; {_ms(r['latency_ms'])} in {r['precision']} ({LABELS[r['peer']]})"
            if r and (f not in lat or r["latency_ms"] < lat[f])
            else ""
        )
        L.append(
            f"| {m['model']} | {_ms(lat.get('ort'))} | "
            + (f"{_ms(lat[f])} ({LABELS[f]})" if f in lat else "-")
            + less
            + f" | {_ms(lat.get('autoinfer'))} | {m.get('autoinfer', {}).get('running', '-')} "
            f"| {_f(1 / m['vs_ort'] if m.get('vs_ort') else None, '{:.2f}x')} |"
        )
    g = results.get("geomean_speedup_vs_ort")
    t = results.get("targets", [])
    passed = sum(1 for x in t if x["status"] == "PASS")
    wrong = sorted(
        {
            _named_with_precision(p, n)
            for m in results.get("models", [])
            for n, p in (m.get("peers") or {}).items()
            if p.get("status") == "wrong"
        }
    )
    L += [
        "",
        f"Geometric-mean speedup over plain ONNX Runtime: {_f(g, '{:.2f}x')}. "
        f"Targets: {passed} of {len(t)} pass. Throughput, load time, memory, overhead "
        f"and the noise of the run: [{link}]({link}).",
    ]
    if wrong:
        L += [
            "",
            "Left out as wrong where their outputs missed plain ONNX Runtime's beyond "
            "fp32 tolerance: " + ", ".join(wrong) + " (the reasons are in the linked "
            "results).",
        ]
    png = Path(link).with_suffix(".png")
    if (Path(__file__).resolve().parent.parent / png).is_file():
        L += ["", f"![latency per model and runtime]({png.as_posix()})"]
    return "\n".join(L)


def update_readme(readme: Path, results: dict[str, Any]) -> str:
    """Rewrite the text between the bench markers; the README is left alone without them."""
    if not readme.is_file():
        return f"note: {readme} does not exist; nothing rewritten"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        return f"note: {readme.name} has no '{START}' ... '{END}' markers; the README was not touched"
    link = f"benchmarks/results/{results['machine']['slug']}.md"
    body = readme_section(results, link)
    new = re.sub(
        re.escape(START) + r".*?" + re.escape(END),
        lambda _: f"{START}\n{body}\n{END}",
        text,
        count=1,
        flags=re.S,
    )
    readme.write_text(new, encoding="utf-8")
    return f"rewrote the benchmark section of {readme}"
