"""Tables, target verdicts and the latency plot of a serving benchmark result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Targets of the serving benchmark. evaluate_targets compares each figure with its threshold.
FP32_SPEEDUP_TARGET = 2.8
GEMM_FRACTION_TARGET = 0.85
SCORE_TOLERANCE = 1e-5
PAGE_LATENCY_RATIO_TARGET = 0.4
ENGINE_OVERHEAD_MS_TARGET = 3.0
INFINITY_THROUGHPUT_RATIO_TARGET = 2.0
INFINITY_P99_RATIO_TARGET = 0.5
SIXTEEN_CLIENT_THROUGHPUT_TARGET = 0.95
P99_OVER_P50_TARGET = 2.0
STARTUP_S_TARGET = 5.0


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a Markdown table with right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[column]) for row in cells)) if cells else len(header)
              for column, header in enumerate(headers)]
    lines = ["| " + " | ".join(header.ljust(width) for header, width in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    for row in cells:
        lines.append("| " + " | ".join(_align(value, width) for value, width in zip(row, widths)) + " |")
    return "\n".join(lines)


def _align(text: str, width: int) -> str:
    """Right-align numbers and left-align words, as Markdown tables of figures usually read."""
    number = text.replace(",", "").replace("%", "").lstrip("-+")
    is_number = number.replace(".", "", 1).replace("e-", "", 1).isdigit() or text == "-"
    return text.rjust(width) if is_number else text.ljust(width)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.1e}"
        return f"{value:.2f}"
    return str(value)


def latency_table(result: dict[str, Any]) -> str:
    """Format one row per system and page size: p50 / p99 in ms and pages/s per client count."""
    clients = result["settings"]["clients"]
    headers = ["system", "page"]
    for count in clients:
        headers += [f"{count}c p50 ms", f"{count}c p99 ms", f"{count}c pages/s"]
    rows = []
    for system, cells in _systems(result):
        for size in result["settings"]["page_sizes"]:
            row: list[object] = [system, size]
            for count in clients:
                cell = _find(cells, size, count)
                row += [cell and cell["p50_ms"], cell and cell["p99_ms"], cell and cell["pages_per_s"]]
            rows.append(row)
    return format_table(headers, rows)


def throughput_table(result: dict[str, Any]) -> str:
    """Mixed-workload pairs/s per system with its ratio to the baseline and to the GEMM limit."""
    limit = result["limit"]
    baseline = result["baseline"]["mixed"]["pairs_per_s"]
    rows = [["baseline (CrossEncoder.predict)", 1, baseline, 1.0, baseline / limit["pairs_per_s"]]]
    for backend, data in result["backends"].items():
        mixed = data["mixed"]
        rows.append([f"sidecar {backend}", mixed["clients"], mixed["pairs_per_s"],
                     mixed["pairs_per_s"] / baseline, mixed["pairs_per_s"] / limit["pairs_per_s"]])
    return format_table(["system", "clients", "pairs/s", "x baseline", "of GEMM limit"], rows)


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one verdict per target and backend; a target without data gets ``reached: None``."""
    targets: list[dict[str, Any]] = []
    baseline = result["baseline"]
    infinity = result.get("infinity", {})

    def add(name: str, backend: str, value: float | None, threshold: float, higher_is_better: bool) -> None:
        if value is None:
            reached = None
        elif higher_is_better:
            reached = value >= threshold
        else:
            reached = value <= threshold
        sign = ">=" if higher_is_better else "<="
        targets.append({"target": name, "backend": backend, "value": value, "goal": f"{sign} {threshold:g}",
                        "reached": reached})

    for backend, data in result["backends"].items():
        pairs_per_s = data["mixed"]["pairs_per_s"]
        add("mixed pairs/s vs baseline", backend, pairs_per_s / baseline["mixed"]["pairs_per_s"],
            FP32_SPEEDUP_TARGET, True)
        add("fraction of fp32 GEMM limit", backend, pairs_per_s / result["limit"]["pairs_per_s"],
            GEMM_FRACTION_TARGET, True)
        add("max abs score diff vs predict", backend, data.get("max_abs_diff_vs_baseline"), SCORE_TOLERANCE, False)
        sidecar_50 = _find(data["cells"], 50, 1)
        baseline_50 = _find(baseline["cells"], 50, 1)
        engine_50 = data.get("engine_50")
        if sidecar_50 and baseline_50:
            add("50-doc p50 / baseline time", backend, sidecar_50["p50_ms"] / baseline_50["p50_ms"],
                PAGE_LATENCY_RATIO_TARGET, False)
        if sidecar_50 and engine_50:
            add("50-doc p50 minus in-process engine (ms)", backend, sidecar_50["p50_ms"] - engine_50["p50_ms"],
                ENGINE_OVERHEAD_MS_TARGET, False)
        sidecar_4 = _find(data["cells"], 50, 4)
        infinity_4 = _find(infinity.get("cells", []), 50, 4)
        if sidecar_4 and infinity_4:
            add("4 clients 50-doc pages/s / infinity", backend,
                sidecar_4["pages_per_s"] / infinity_4["pages_per_s"], INFINITY_THROUGHPUT_RATIO_TARGET, True)
            add("4 clients 50-doc p99 / infinity p99", backend, sidecar_4["p99_ms"] / infinity_4["p99_ms"],
                INFINITY_P99_RATIO_TARGET, False)
        single = [cell["pairs_per_s"] for cell in data["cells"] if cell["clients"] == 1]
        for cell in data["cells"]:
            if cell["clients"] != 16 or not single:
                continue
            add(f"16 clients {cell['page_size']}-doc pairs/s / best single stream", backend,
                cell["pairs_per_s"] / max(single), SIXTEEN_CLIENT_THROUGHPUT_TARGET, True)
            add(f"16 clients {cell['page_size']}-doc p99 / p50", backend, cell["p99_ms"] / cell["p50_ms"],
                P99_OVER_P50_TARGET, False)
        add("start to SERVING (s)", backend, data.get("startup_s"), STARTUP_S_TARGET, False)
    return targets


def targets_table(targets: Sequence[dict[str, Any]]) -> str:
    rows = [[target["target"], target["backend"], target["value"], target["goal"],
             {True: "yes", False: "NO", None: "no data"}[target["reached"]]] for target in targets]
    return format_table(["target", "backend", "value", "goal", "reached"], rows)


def plot_latency(result: dict[str, Any], path: Path) -> str | None:
    """Draw p50 latency (bars to p99) against page size per system; return why it was skipped, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        return "matplotlib is not installed; pip install -e '.[bench]'"

    clients = [count for count in result["settings"]["clients"] if count in (1, 16)] or result["settings"]["clients"][:1]
    figure, axes = pyplot.subplots(1, len(clients), figsize=(6 * len(clients), 4.5), squeeze=False)
    colors = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, count in zip(axes[0], clients):
        for number, (system, cells) in enumerate(_systems(result)):
            points = sorted((cell["page_size"], cell["p50_ms"], cell["p99_ms"]) for cell in cells
                            if cell["clients"] == count and isinstance(cell["page_size"], int) and cell["p50_ms"])
            if not points:
                continue
            sizes, p50, p99 = zip(*points)
            errors = [[0] * len(p50), [high - low for low, high in zip(p50, p99)]]
            axis.errorbar(sizes, p50, yerr=errors, marker="o", capsize=4, label=system,
                          color=colors[number % len(colors)])
        axis.set_title(f"{count} concurrent client{'s' if count > 1 else ''}")
        axis.set_xlabel("documents per page")
        axis.set_ylabel("latency per page, ms (p50, bar to p99)")
        axis.set_xticks(result["settings"]["page_sizes"])
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(f"Rerank latency, {result['model']['description']}, {result['hardware']['cpu']}, "
                    f"{result['hardware']['cpus']} CPUs", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return None


def _systems(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    systems = [("baseline", result["baseline"]["cells"])]
    systems += [(f"sidecar {backend}", data["cells"]) for backend, data in result["backends"].items()]
    if result.get("infinity", {}).get("cells"):
        systems.append(("infinity-emb", result["infinity"]["cells"]))
    return systems


def _find(cells: Sequence[dict[str, Any]], page_size: int, clients: int) -> dict[str, Any] | None:
    for cell in cells:
        if cell["page_size"] == page_size and cell["clients"] == clients and cell["pages"]:
            return cell
    return None
