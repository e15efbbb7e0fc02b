"""`autoinfer` command line: doctor, select, bench, cache. The only module that prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import OBJECTIVES
from .errors import AutoinferError, ConfigError

if TYPE_CHECKING:
    from .decision import Decision, Ranked


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    t0 = time.monotonic()

    def show(msg: str) -> None:
        sys.stderr.write(f"\r\x1b[K[{time.monotonic() - t0:5.1f}s] {msg}")
        sys.stderr.flush()

    return show


def _end_progress(enabled: bool) -> None:
    if enabled:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _shapes(items: Sequence[str] | None) -> dict[str, list[int]] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = [int(d) for d in dims.replace("x", ",").split(",") if d]
        except ValueError:
            raise ConfigError(f"--input-shape: expected NAME=D1,D2,..., received {item!r}") from None
    return out


def _inputs(path: str | None) -> dict[str, Any] | None:
    """A feed dict from an .npz file (one array per input name), or None."""
    if not path:
        return None
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--inputs: expected an .npz file of input arrays, received {path!r} ({exc})"
        ) from None


def _list(s: str | None) -> list[str] | None:
    return [x for x in s.split(",") if x] if s else None


# -- doctor -------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report

    rep = report(cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
        return 0 if rep["ok"] else 1
    hw = rep["hardware"]
    cpu = hw["cpu"]
    print("autoinfer doctor\n")
    print("Hardware")
    print(f"  {rep['hardware_summary']}")
    print(
        f"  CPU: {cpu['model_name']} ({cpu['vendor']}, {cpu['arch']}), "
        f"{cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores, "
        f"{cpu['usable_cores']} usable by this process"
        + (f" (quota {cpu['quota_cores']:g})" if cpu.get("quota_cores") else "")
    )
    if cpu.get("flags"):
        print(f"  ISA: {' '.join(cpu['flags'])}")
    if cpu.get("soc_model"):
        print(f"  Board: {cpu['soc_model']}")
    for g in hw.get("nvidia_gpus", []):
        cc = ".".join(str(x) for x in g["compute_capability"])
        print(
            f"  NVIDIA GPU {g['index']}: {g['name']}, {g['memory_total_mb']} MB, cc {cc}, "
            f"driver {g['driver_version']}, CUDA {g.get('cuda_driver_version')}"
        )
    for a in hw.get("accelerators", []):
        print(f"  {a['vendor']} {a['kind']}: {a['name']}")
    for n in hw.get("notes", []):
        if n["status"] != "ok":
            print(f"  ({n['probe']}: {n['status']}, {n['detail']})")
    print("\nRuntimes")
    for r in rep["runtimes"]:
        if r["usable"]:
            state = f"OK   {r['version']}, devices: {', '.join(r['devices']) or '-'}"
        elif r["installed"]:
            state = f"FAIL {r['version']}: {r['reason']}"
        else:
            state = "--   not installed"
        print(f"  {r['backend']:<12} {state}")
    if rep["problems"]:
        print("\nProblems and fixes")
        for p in rep["problems"]:
            print(f"  [{p['severity']}] {p['message']}")
            if p.get("fix"):
                print(f"      fix: {p['fix']}")
    c = rep["cache"]
    print(
        f"\nCache\n  {c['path']} ({c['size_bytes'] / 2**20:.1f} MB"
        f"{'' if c['writable'] else ', NOT writable'}{'' if c['enabled'] else ', disabled'})"
    )
    usable = [r["backend"] for r in rep["runtimes"] if r["usable"]]
    print(
        f"\n{'OK' if rep['ok'] else 'NOT OK'}: {len(usable)} runtime(s) usable here"
        + (f" ({', '.join(usable)})" if usable else "")
    )
    return 0 if rep["ok"] else 1


# -- select / bench -----------------------------------------------------------
def cmd_select(args: argparse.Namespace) -> int:
    from .policy import select

    tty = sys.stderr.isatty() and not args.json
    dec = select(
        args.model,
        objective=args.objective,
        benchmark=False if args.no_benchmark else "auto",
        backends=_list(args.backends),
        exclude=_list(args.exclude),
        input_shapes=_shapes(args.input_shape),
        cache_dir=args.cache_dir,
        budget_s=args.budget,
        precision=args.precision,
        progress=_progress(tty),
        threads=args.threads,
        sample_inputs=_inputs(args.inputs),
    )
    _end_progress(tty)
    if args.json:
        print(
            json.dumps({**dec.to_dict(), "key": dec.key, "from_cache": dec.from_cache}, indent=2, default=str)
        )
    else:
        print(f"autoinfer select {args.model}\n")
        print(dec.explain())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .measure import sample_feeds
    from .session import Session

    tty = sys.stderr.isatty()
    shapes = _shapes(args.input_shape)
    t0 = time.perf_counter()
    sess = Session(
        args.model,
        objective=args.objective,
        backends=_list(args.backends),
        exclude=_list(args.exclude),
        input_shapes=shapes,
        cache_dir=args.cache_dir,
        budget_s=args.budget,
        precision=args.precision,
        progress=_progress(tty),
        selection="blocking",
        threads=args.threads,
        sample_inputs=_inputs(args.inputs),
    )
    _end_progress(tty)
    t_open = time.perf_counter() - t0
    from .policy import resolve_input_shapes

    feeds = _inputs(args.inputs) or sample_feeds(sess.facts, resolve_input_shapes(sess.facts, shapes), seed=1)
    outs = sess.run(None, feeds)
    if sess.selecting:  # the reference failed on synthetic inputs: selecting on these
        sess.wait_for_choice()
        outs = sess.run(None, feeds)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    c = sess.choice
    assert c is not None  # a blocking selection has chosen
    print(f"autoinfer run {args.model}\n")
    print(f"Session() took {t_open:.2f} s ({'decision cache hit' if c.from_cache else 'selected now'})")
    print(
        f"running on {c.backend} ({c.device}, {c.precision})" + (f" with {c.settings}" if c.settings else "")
    )
    for o, spec in zip(outs, sess.get_outputs(), strict=True):
        print(
            f"  output {spec.name}: shape {list(o.shape)}, {o.dtype}, "
            f"mean {float(np.mean(o)):.4g}, std {float(np.std(o)):.4g}"
        )
    if times:
        print(f"  {len(times)} runs: median {np.median(times) * 1e3:.3f} ms")
    print("\nwhy:")
    print(sess.explain())
    sess.close()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import probes

    from .config import open_cache
    from .model import load_facts_cached
    from .policy import Options, Selector

    tty = sys.stderr.isatty() and not args.json
    settings, cache = open_cache(args.cache_dir, args.budget or 600.0)
    facts = load_facts_cached(args.model, cache)
    opts = Options(
        objective=args.objective,
        benchmark=True,
        backends=_list(args.backends),
        exclude=_list(args.exclude),
        input_shapes=_shapes(args.input_shape),
        budget_s=settings.budget_s,
        tune=args.tune,
        precision=args.precision,
        threads=args.threads,
    ).normalised()
    given = _inputs(args.inputs)
    dec = Selector(facts, probes.detect(), opts, cache, settings, _progress(tty)).select(
        [given] if given else None, "sample_inputs" if given else ""
    )
    _end_progress(tty)
    rows = sorted(
        (_bench_row(r) for r in dec.ranking), key=lambda x: (x["median_ms"] is None, x["median_ms"] or 0)
    )
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(args.model),
                    "winner": dec.winner.key,
                    "rows": rows,
                    "unsupported": dec.unsupported,
                },
                indent=2,
                default=str,
            )
        )
    else:
        _print_bench(args, dec, rows)
    if args.plot:
        _plot(rows, Path(args.plot), str(args.model))
        if not args.json:
            print(f"chart written to {args.plot}")
    return 0


def _bench_row(r: Ranked) -> dict[str, Any]:
    m = r.measurement
    return {
        "candidate": r.candidate.key,
        "status": r.status,
        "status_reason": r.status_reason,
        "median_ms": m.median_s * 1e3 if m else None,
        "p90_ms": m.p90_s * 1e3 if m else None,
        "throughput_per_s": m.throughput if m else None,
        "load_s": m.load_s if m else None,
        "first_inference_s": m.first_s if m else None,
        "peak_mb": m.peak_mb if m else None,
        "model_memory_mb": m.rss_load_mb if m else None,
        "max_abs_err": m.max_abs_err if m else None,
        "race": r.race.to_dict() if r.race else None,
    }


def _print_bench(args: argparse.Namespace, dec: Decision, rows: list[dict[str, Any]]) -> None:
    print(f"autoinfer bench {args.model} (objective {args.objective})\n")
    print(
        f"{'candidate':<50} {'median ms':>10} {'p90 ms':>9} {'/s':>8} {'load s':>7} "
        f"{'peak MB':>8} {'max err':>9}"
    )
    for x in rows:
        if x["median_ms"] is None:
            print(f"{x['candidate']:<50} {x['status']}: {x['status_reason']}")
            continue
        err = x["max_abs_err"]
        print(
            f"{x['candidate']:<50} {x['median_ms']:10.3f} {x['p90_ms']:9.3f} "
            f"{x['throughput_per_s']:8.1f} {x['load_s']:7.2f} {x['peak_mb']:8.0f} "
            f"{err if err is None else format(err, '9.1e')}"
            + (
                f"  race {x['race']['ratio']:.3f}x [{x['race']['low']:.3f}, "
                f"{x['race']['high']:.3f}] {x['race']['verdict']}"
                if x["race"]
                else ""
            )
            + ("" if x["status"] == "measured" else f"  [{x['status']}: {x['status_reason']}]")
        )
    for u in dec.unsupported:
        print(f"{u['key']:<50} unsupported, because {u['reason']}")
    print(f"\nwinner: {dec.winner.key}")


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError('--plot needs matplotlib: pip install "autoinfer[dev]"') from None
    ok = [r for r in rows if r["median_ms"] is not None and r["status"] == "measured"]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(ok) + 1.5))
    ax.barh(
        [r["candidate"] for r in ok],
        [r["median_ms"] for r in ok],
        xerr=[[0] * len(ok), [r["p90_ms"] - r["median_ms"] for r in ok]],
    )
    ax.invert_yaxis()
    ax.set_xlabel("latency, ms (median, bar to p90)")
    ax.set_title(Path(title).name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# -- cache --------------------------------------------------------------------
def cmd_cache(args: argparse.Namespace) -> int:
    from .config import open_cache

    settings, cache = open_cache(args.cache_dir, enabled=True)  # lists and clears even when off
    if args.action == "path":
        print(settings.cache_dir)
    elif args.action == "list":
        decs = cache.decisions()
        if not decs:
            print(f"no decisions in {settings.cache_dir}")
        for d in decs:
            dec = d.get("decision", {})
            w = dec.get("winner", {})
            print(
                f"{d.get('key', '?')[:16]}  {Path(d.get('model', {}).get('path', '?')).name:<30} "
                f"{dec.get('objective', '?'):<10} {w.get('backend')}:{w.get('device')}:"
                f"{w.get('precision')} {w.get('settings') or ''}"
            )
        print(f"{len(decs)} decision(s), {cache.size() / 2**20:.1f} MB in {settings.cache_dir}")
    elif args.action == "clear":
        size = cache.size()
        cache.clear()
        print(f"cleared {settings.cache_dir} ({size / 2**20:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoinfer",
        description=("Pick the fastest correct inference runtime for an ONNX model on this machine."),
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what autoinfer does")
    p.add_argument(
        "--cache-dir", default=None, help="cache directory (default: user cache dir, or AUTOINFER_CACHE_DIR)"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="what this machine can run, and how to fix what it cannot")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="path to an .onnx model")
        sp.add_argument("--objective", default=OBJECTIVES[0], choices=OBJECTIVES)
        sp.add_argument("--backends", help="comma-separated runtimes to consider")
        sp.add_argument("--exclude", help="comma-separated runtimes to leave out")
        sp.add_argument(
            "--input-shape",
            action="append",
            metavar="NAME=D1,D2,...",
            help="concrete shape of a dynamic input (repeatable)",
        )
        sp.add_argument("--budget", type=float, default=None, help="time budget in seconds")
        sp.add_argument(
            "--precision",
            default="fp32",
            choices=["fp32", "auto"],
            help="fp32 (default): the model's own arithmetic; auto: also fp16/bf16 "
            "where the hardware runs them natively, at their own tolerance",
        )
        sp.add_argument(
            "--inputs",
            metavar="FEEDS.npz",
            default=None,
            help="real inputs to measure on (one array per input name)",
        )
        sp.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads the runtimes may use (default: the CPU quota)",
        )
        sp.add_argument("--json", action="store_true")

    s = sub.add_parser("select", help="choose the runtime for a model (cached) and say why")
    model_args(s)
    s.add_argument("--no-benchmark", action="store_true", help="rank only, measure nothing")
    s.set_defaults(func=cmd_select)
    r = sub.add_parser(
        "run",
        help="open a Session on a model (selecting if needed), run it on "
        "sample inputs and say what it runs on and why",
    )
    model_args(r)
    r.add_argument("--repeat", type=int, default=20, help="timed runs after the first")
    r.set_defaults(func=cmd_run)
    b = sub.add_parser("bench", help="measure every candidate for a model")
    model_args(b)
    b.add_argument("--plot", metavar="FILE.png", help="write a latency chart")
    b.add_argument("--tune", action="store_true", help="also measure tuned settings")
    b.set_defaults(func=cmd_bench)
    c = sub.add_parser("cache", help="the decision cache")
    c.add_argument("action", choices=["path", "list", "clear"])
    c.set_defaults(func=cmd_cache)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except AutoinferError as exc:
        print(f"autoinfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
