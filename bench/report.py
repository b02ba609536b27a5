"""Print the tables of ratios from a pytest-benchmark JSON file.

    pytest bench/ --benchmark-only --benchmark-json=bench/results.json
    python bench/report.py bench/results.json                      # print markdown tables
    python bench/report.py bench/results.json --write bench/RESULTS.md

``--write`` replaces what lies between ``<!-- tables:begin -->`` and ``<!-- tables:end -->`` in
the file (the rest, hand-written analysis, is kept). Times are the minimum over rounds (the
least disturbed run on a shared machine); every ratio compares variants of one run.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
from collections import defaultdict

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
PREFILL_ORDER = ["fixed_hf", "fixed_polar", "bound", "lowest", "step", "padded", "one_at_a_time"]
DECODE_ORDER = ["hf_generate", "polar_bound", "polar_shared", "polar_lowest", "polar_step", "one_at_a_time"]
SCHED_IMPLS = ["cpp_bound", "cpp_lowest", "cpp_step", "cpp_pack_bound", "cpp_pack_lowest", "py_bound", "py_lowest",
               "py_step"]
WAVE_COLS = ["count_lower_bound", "beam64", "greedy_lb", "cpp_bound", "cpp_lowest", "py_lowest_lookahead", "py_most",
             "py_critical", "cpp_step"]
TARGET_PREFILL, TARGET_DECODE, TARGET_ONE, TARGET_SCHED_MS = 0.9, 0.9, 10.0, 1.0  # decode: issue 23


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        name = info.get("Model name", "?").strip()
        cpus = info.get("CPU(s)", "?").strip()
    except (OSError, subprocess.CalledProcessError):
        name, cpus = platform.processor() or "?", "?"
    return f"{name}, {cpus} CPUs"


def _t(bench) -> float:
    return bench["stats"]["min"]


def _fmt(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def prefill_tables(benches) -> list[str]:
    groups = defaultdict(dict)
    for b in benches:
        groups[(b["extra_info"]["model"], b["extra_info"]["B"])][b["extra_info"]["variant"]] = b
    if not groups:
        return []
    out = ["### Prefill (T = 64 prompt tokens)", "",
           "Row-layer throughput = sum(len(program)) x T / s, relative to the fixed-depth HF forward "
           "(B x D x T / s). `time` = seconds (min over rounds); `x fixed` = time / fixed-depth time.", "",
           "| model | B | variant | waves | row-layers | time s | x fixed time | row-layer throughput vs fixed |",
           "|---|---|---|---|---|---|---|---|"]
    order = PREFILL_ORDER
    for (model, B), vs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "smollm2", kv[0][1])):
        base = vs.get("fixed_hf")
        for v in order:
            if v not in vs:
                continue
            e = vs[v]["extra_info"]
            tput = e["work"] / _t(vs[v])
            rel = tput / (base["extra_info"]["work"] / _t(base)) if base else None
            out.append(f"| {model} | {B} | {v} | {e.get('waves', e['D'])} | {e['row_layers']} | {_t(vs[v]):.3f} | "
                       f"{_fmt(_t(vs[v]) / _t(base) if base else None)} | **{_fmt(rel)}** |")
    return out + [""]


def _groups(benches) -> dict:
    groups = defaultdict(dict)
    for b in benches:
        groups[(b["extra_info"]["model"], b["extra_info"]["B"])][b["extra_info"]["variant"]] = b
    return groups


def prefill_ratios(benches) -> dict:
    """``{(model, B, variant): row-layer throughput / fixed_hf's}``."""
    out = {}
    for (model, B), vs in _groups(benches).items():
        base = vs.get("fixed_hf")
        if base is None:
            continue
        for v, b in vs.items():
            out[(model, B, v)] = (b["extra_info"]["work"] / _t(b)) / (base["extra_info"]["work"] / _t(base))
    return out


def decode_rows(benches) -> dict:
    """``{(model, B, variant): dict(time, decode_time, whole, decode, one, ...)}`` (ratios vs HF generate)."""
    rows = {}
    for (model, B), vs in _groups(benches).items():
        hf, hf1 = vs.get("hf_generate"), vs.get("hf_generate_prefill")
        one = vs.get("one_at_a_time")
        hf_dec = (hf["extra_info"]["decode_work"] / (_t(hf) - _t(hf1))) if hf and hf1 and _t(hf) > _t(hf1) else None
        for v in DECODE_ORDER:
            if v not in vs:
                continue
            b, e = vs[v], vs[v]["extra_info"]
            p1 = vs.get(f"{v}_prefill")
            dt = _t(b) - _t(p1) if p1 is not None else None
            whole = (e["work"] / _t(b)) / (hf["extra_info"]["work"] / _t(hf)) if hf else None
            dec = None
            if v == "hf_generate":
                dec = 1.0 if hf_dec else None
            elif dt and dt > 0 and hf_dec:
                dec = (e["decode_work"] / dt) / hf_dec
            rows[(model, B, v)] = dict(bench=b, time=_t(b), prefill_time=_t(p1) if p1 is not None else None,
                                       decode_time=dt, whole=whole, decode=dec,
                                       one=_t(one) / _t(b) if one else None)
    return rows


def decode_tables(benches) -> list[str]:
    rows = decode_rows(benches)
    if not rows:
        return []
    out = ["### Decode (T = 64 prompt tokens, 32 new tokens, greedy, no EOS)", "",
           "`tok/s` = B x 32 / total time. `rl-tput vs HF`: row-layer throughput of the whole call "
           "(prefill + 31 decode passes) relative to HF `generate`. `decode s`: the 31 decode passes alone, "
           "t(32 tokens) - t(1 token) of the same variant (its `_prefill` twin); `decode-only`: their row-layer "
           "throughput relative to HF's. `x one-at-a-time`: total-time speed-up over `polar.generate` row by row "
           "(`-`: not run).", "",
           "| model | B | variant | waves (prefill / decode) | time s | decode s | tok/s | rl-tput vs HF | "
           "decode-only rl-tput vs HF | x one-at-a-time |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, B, v), r in sorted(rows.items(), key=lambda kv: (kv[0][0] != "smollm2", kv[0][1],
                                                                 DECODE_ORDER.index(kv[0][2]))):
        e = r["bench"]["extra_info"]
        waves = f"{e['prefill_waves']} / {e['decode_waves']}" if "decode_waves" in e else f"{e['D']} / {e['D'] * 31}"
        if v == "one_at_a_time":
            waves = "-"
        out.append(f"| {model} | {B} | {v} | {waves} | {r['time']:.2f} | {_fmt(r['decode_time'])} | "
                   f"{e['new_token_count'] / r['time']:.1f} | **{_fmt(r['whole'])}** | {_fmt(r['decode'])} | "
                   f"{_fmt(r['one'], 1)} |")
    return out + [""]


def scheduler_tables(benches, quality) -> list[str]:
    out = []
    if benches:
        groups = defaultdict(dict)
        for b in benches:
            groups[(b["extra_info"]["D"], b["extra_info"]["n"])][b["extra_info"]["impl"]] = b
        present = {i for vs in groups.values() for i in vs}
        impls = [i for i in SCHED_IMPLS if i in present]
        out += ["### Scheduler timing", "",
                "ms per 1000 programs (min over rounds); `cpp_pack_*` includes `polar.pack`; `py_*`: the Python "
                "reference (`py_bound` only up to 256 programs: it is quadratic, ~17 s for 1024); "
                "`speed-up` = Python reference lowest / C++ lowest.", "",
                "| D | programs | mean length | " + " | ".join(impls) + " | speed-up | waves bound / lowest / step |",
                "|---|---|---|" + "---|" * len(impls) + "---|---|"]
        for (D, n), vs in sorted(groups.items()):
            cells = [_fmt(_t(vs[i]) * 1e3 / (n / 1000), 3) if i in vs else "-" for i in impls]
            sp = _t(vs["py_lowest"]) / _t(vs["cpp_lowest"]) if "py_lowest" in vs and "cpp_lowest" in vs else None
            ml = next(iter(vs.values()))["extra_info"]["mean_length"]
            w = " / ".join(str(vs[i]["extra_info"]["waves"]) if i in vs else "-"
                           for i in ("cpp_bound", "cpp_lowest", "cpp_step"))
            out.append(f"| {D} | {n} | {ml:.1f} | " + " | ".join(cells) + f" | {_fmt(sp, 0)}x | {w} |")
        out.append("")
    if quality:
        cols = [c for c in WAVE_COLS if any(c in b["extra_info"]["mean_waves"] for b in quality)]
        out += ["### Waves per batch (30-layer segment space, mean over batches)", "",
                "Each entry: mean waves / mean longest program. `beam64`: offline beam search "
                "(bench/supersequence.py); `count_lower_bound`: sum over layers of the most times one row "
                "uses it (no schedule can do better). Last column: beam search time per batch.", "",
                "| B | batches | longest | " + " | ".join(cols) + " | bound / beam64 | lowest / beam64 | beam s/batch |",
                "|---|---|---|" + "---|" * len(cols) + "---|---|---|"]
        for b in sorted(quality, key=lambda b: b["extra_info"]["B"]):
            e = b["extra_info"]
            m = e["mean_waves"]
            cells = [f"{m[c] / m['longest']:.2f}" if c in m else "-" for c in cols]
            bb = f"{m['cpp_bound'] / m['beam64']:.2f}" if "cpp_bound" in m else "-"
            out.append(f"| {e['B']} | {e['batches']} | {m['longest']:.1f} | " + " | ".join(cells)
                       + f" | {bb} | {m['cpp_lowest'] / m['beam64']:.2f} | {_t(b) / e['batches']:.2f} |")
        out.append("")
    return out


def _verdict(x, target) -> str:
    return "-" if x is None else ("met" if x >= target else "**missed**")


def targets_table(by_suite) -> list[str]:
    """Figures of merit vs the targets, computed from the same run as the tables."""
    out = ["### Figures of merit vs targets", "",
           "| target | case | variant | measured | verdict |", "|---|---|---|---|---|"]
    pre = prefill_ratios(by_suite["prefill"])
    for (model, B, v), x in sorted(pre.items(), key=lambda kv: (kv[0][0] != "smollm2", kv[0][1])):
        if B >= 32 and v in ("bound", "lowest"):
            out.append(f"| prefill row-layer tput >= {TARGET_PREFILL}x fixed | {model} B={B} | {v} | {x:.2f} | "
                       f"{_verdict(x, TARGET_PREFILL)} |")
    dec = decode_rows(by_suite["decode"])
    for (model, B, v), r in sorted(dec.items(), key=lambda kv: (kv[0][0] != "smollm2", DECODE_ORDER.index(kv[0][2]))):
        if B != 32 or v not in ("polar_bound", "polar_shared", "polar_lowest"):
            continue
        out.append(f"| decode row-layer tput >= {TARGET_DECODE}x HF generate (whole call) | {model} B=32 | {v} | "
                   f"{_fmt(r['whole'])} | {_verdict(r['whole'], TARGET_DECODE)} |")
        out.append(f"| decode row-layer tput >= {TARGET_DECODE}x HF generate (decode passes only) | {model} B=32 | "
                   f"{v} | {_fmt(r['decode'])} | {_verdict(r['decode'], TARGET_DECODE)} |")
        out.append(f"| decode total time >= {TARGET_ONE:.0f}x faster than one-at-a-time | {model} B=32 | {v} | "
                   f"{_fmt(r['one'], 1)}x | {_verdict(r['one'], TARGET_ONE)} |")
    sched = by_suite["scheduler"]
    for impl in ("cpp_bound", "cpp_lowest", "cpp_step", "cpp_pack_bound"):
        vals = [(_t(b) * 1e3 / (b["extra_info"]["n"] / 1000), b["extra_info"]) for b in sched
                if b["extra_info"]["impl"] == impl]
        if not vals:
            continue
        worst, e = max(vals, key=lambda t: t[0])
        out.append(f"| scheduler < {TARGET_SCHED_MS:g} ms per 1000 programs (worst size) | D={e['D']} n={e['n']} | "
                   f"{impl} | {worst:.3f} ms | {'met' if worst < TARGET_SCHED_MS else '**missed**'} |")
    return out + [""] if len(out) > 4 else []


def other_tables(benches) -> list[str]:
    if not benches:
        return []
    out = ["### Other benchmarks", "", "| group | name | min ms | extra |", "|---|---|---|---|"]
    for b in benches:
        out.append(f"| {b.get('group')} | {b['name']} | {_t(b) * 1e3:.3f} | {json.dumps(b.get('extra_info', {}))} |")
    return out + [""]


def render(data: dict) -> str:
    benches = data["benchmarks"]
    by_suite = defaultdict(list)
    for b in benches:
        by_suite[b.get("extra_info", {}).get("suite", "other")].append(b)
    models = sorted({b["extra_info"]["model_desc"] for b in benches if "model_desc" in b.get("extra_info", {})})
    lines = [f"Machine: {machine()}; torch threads: 1; run at {data.get('datetime', '?')}.", ""]
    lines += [f"- model `{m.split(',')[0].split(' ')[0].lower()}`: {m}" for m in models] + [""]
    lines += prefill_tables(by_suite["prefill"])
    lines += decode_tables(by_suite["decode"])
    lines += scheduler_tables(by_suite["scheduler"], by_suite["waves"])
    lines += targets_table(by_suite)
    lines += other_tables(by_suite["other"])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json output(s); later files win")
    ap.add_argument("--write", help="markdown file whose tables section to replace")
    args = ap.parse_args()
    data: dict = {"benchmarks": []}
    seen: dict[str, int] = {}
    for path in args.json:
        with open(path) as f:
            part = json.load(f)
        data["datetime"] = part.get("datetime")
        for b in part["benchmarks"]:
            if b["fullname"] in seen:
                data["benchmarks"][seen[b["fullname"]]] = b
            else:
                seen[b["fullname"]] = len(data["benchmarks"])
                data["benchmarks"].append(b)
    text = render(data)
    if not args.write:
        print(text)
        return
    with open(args.write) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{args.write} has no {BEGIN} ... {END} section")
    doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", doc, flags=re.S)
    with open(args.write, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
