"""Run the trio_overseer benchmark suite: ``python -m benchmarks [--quick] [--only NAME]``.

Each benchmark measures its candidate (trio_overseer) and its baseline (raw
Trio, a peer supervisor, a fixed target) in the same run, alternating them
over several rounds (the order flips every round) so that drift and noise of
the machine hit both alike.  Every measurement is a fresh worker process
(``benchmarks._worker``) with a unique tag in its environment; after it ends,
any tagged process still alive is a survivor: it is killed and the row fails.

The tables (Markdown) go to stdout, progress to stderr, and every number to
``benchmarks/results/latest.json``.  No timing is ever asserted: the exit
status is 1 only when a correctness check failed (lost lines, wrong exit
codes, survivors, a crash) in a trio_overseer or baseline row; peers that are
missing or misbehave are skipped with a note.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Any

from benchmarks._common import (
    RESULT_MARK,
    ROUND_VAR,
    TAG_VAR,
    describe,
    kill_all,
    raise_nofile,
    tagged_pids,
    wait_gone,
)
from benchmarks._spec import Bench, Target, Variant, fmt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Every benchmark module, in the order they run.
BENCHMARKS = ("spawn", "start", "stop", "stop_timeout", "logs", "cli", "idle", "memory")


# -- running one measurement --------------------------------------------------


class Measurement:
    """A worker process measuring one variant once."""

    def __init__(self, bench: Bench, variant: Variant, timeout: float, round_no: int) -> None:
        self.bench = bench
        self.variant = variant
        self.timeout = timeout
        self.tag = uuid.uuid4().hex
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        env = dict(os.environ)
        env[TAG_VAR] = self.tag
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[ROUND_VAR] = str(round_no + 1)
        argv = [
            sys.executable,
            "-m",
            "benchmarks._worker",
            bench.name,
            variant.func,
            json.dumps(variant.params),
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )

    def finish(self) -> dict[str, Any]:
        problems: list[str] = []
        try:
            self.proc.wait(timeout=max(1.0, self.started + self.timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            problems.append(f"timed out after {self.timeout:.0f} s")
            kill_all([self.proc.pid])
            self.proc.wait()
        survivors = wait_gone(tagged_pids(self.tag), 1.0)
        if survivors:
            problems.append(
                f"{len(survivors)} tagged process(es) survived the measurement: "
                + "; ".join(describe(p) for p in survivors[:3])
            )
            kill_all(survivors)
            wait_gone(survivors, 5.0)
        self._out.seek(0)
        self._err.seek(0)
        out = self._out.read().decode(errors="replace")
        err = self._err.read().decode(errors="replace")
        self._out.close()
        self._err.close()
        result: dict[str, Any] | None = None
        for line in out.splitlines():
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
        if result is None:
            tail = " | ".join(err.strip().splitlines()[-3:])
            result = {"value": None, "problems": [f"worker exit {self.proc.returncode}: {tail}"]}
        elif self.proc.returncode != 0 and "skip" not in result:
            problems.append(f"worker exit code {self.proc.returncode}")
            if os.environ.get("BENCH_VERBOSE"):
                print(err, file=sys.stderr)
        result.setdefault("problems", [])
        result["problems"] = list(result["problems"]) + problems
        return result


# -- running a benchmark --------------------------------------------------------


class VariantRecord:
    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.values: list[float] = []
        self.extras: dict[str, list[float]] = {}
        self.problems: list[str] = []
        self.skip: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.problems) and self.skip is None

    def add(self, result: dict[str, Any]) -> None:
        if "skip" in result:
            self.skip = result["skip"]
            return
        if result.get("problems"):
            for problem in result["problems"]:
                if problem not in self.problems:
                    self.problems.append(problem)
            if self.variant.role == "peer":  # a peer that misbehaves is skipped, with why
                self.skip = "peer failed: " + "; ".join(self.problems)
        if result.get("value") is not None:
            self.values.append(float(result["value"]))
        for key, value in (result.get("extra") or {}).items():
            if isinstance(value, int | float):
                self.extras.setdefault(key, []).append(float(value))

    def median(self, metric: str = "value") -> float | None:
        values = self.values if metric == "value" else self.extras.get(metric, [])
        return statistics.median(values) if values else None

    def status(self) -> str:
        if self.skip is not None:
            return f"skipped: {self.skip}"
        if self.problems:
            return "FAILED: " + "; ".join(self.problems)
        return "ok"

    def to_json(self) -> dict[str, Any]:
        v = self.variant
        return {
            "label": v.label,
            "role": v.role,
            "params": v.params,
            "values": self.values,
            "median": self.median(),
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "extras": {
                k: {"values": xs, "median": statistics.median(xs)} for k, xs in self.extras.items()
            },
            "status": self.status(),
            "problems": self.problems,
            "skip": self.skip,
        }


def run_bench(bench: Bench, rounds: int | None) -> dict[str, VariantRecord]:
    records = {v.key: VariantRecord(v) for v in bench.variants}
    n_rounds = rounds or bench.rounds
    for r in range(n_rounds):
        order = bench.variants if r % 2 == 0 else list(reversed(bench.variants))
        todo = [v for v in order if records[v.key].skip is None and r < (v.rounds or n_rounds)]
        if bench.parallel:
            batch = [Measurement(bench, v, bench.timeout, r) for v in todo]
            for m in batch:
                _record(records, m, r)
        else:
            for v in todo:
                _record(records, Measurement(bench, v, bench.timeout, r), r)
    return records


def _record(records: dict[str, VariantRecord], m: Measurement, r: int) -> None:
    t0 = time.monotonic()
    result = m.finish()
    rec = records[m.variant.key]
    rec.add(result)
    if "skip" in result:
        what = "skip: " + result["skip"]
    elif result.get("problems"):
        what = "PROBLEM: " + "; ".join(result["problems"])
    else:
        what = fmt(result.get("value"), m.bench.unit)
    wall = time.monotonic() - m.started
    del t0
    print(
        f"  [{m.bench.name} r{r + 1}] {m.variant.label}: {what}  ({wall:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


# -- targets and tables -----------------------------------------------------------


def evaluate(bench: Bench, records: dict[str, VariantRecord]) -> list[dict[str, Any]]:
    rows = []
    for t in bench.targets:
        subj = records[t.subject]
        ref = records[t.reference] if t.reference else None
        row: dict[str, Any] = {
            "benchmark": bench.name,
            "comparison": t.text,
            "target": t.target_text(),
            "stretch": t.stretch,
            "ratio": None,
            "value": None,
            "met": None,
            "note": "",
        }
        why = _unusable(subj) or (_unusable(ref) if ref else None)
        if why:
            row["note"] = why
            rows.append(row)
            continue
        value = subj.median(t.metric)
        if ref is not None:
            ref_value = ref.median(t.metric)
            if value is None or not ref_value:
                row["note"] = "no data"
                rows.append(row)
                continue
            row["ratio"] = value / ref_value
            row["met"] = t.check(row["ratio"])
        else:
            if value is None:
                row["note"] = "no data"
                rows.append(row)
                continue
            row["value"] = value
            row["met"] = t.check(value)
        rows.append(row)
    return rows


def _unusable(rec: VariantRecord) -> str | None:
    if rec.skip is not None:
        return f"{rec.variant.label} skipped"
    if rec.problems:
        return f"{rec.variant.label} FAILED"
    if not rec.values:
        return f"{rec.variant.label}: no data"
    return None


def results_table(benches: list[tuple[Bench, dict[str, VariantRecord]]]) -> str:
    lines = [
        "| benchmark | variant | median | min – max | n | check | notes |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for bench, records in benches:
        for v in bench.variants:
            rec = records[v.key]
            if rec.values:
                med = fmt(rec.median(), bench.unit)
                span = f"{fmt(min(rec.values), bench.unit)} – {fmt(max(rec.values), bench.unit)}"
            else:
                med = span = "–"
            notes = [
                f"{label}: {fmt(rec.median(key), unit)}"
                for key, (label, unit) in bench.extras.items()
                if rec.median(key) is not None
            ]
            status = rec.status()
            if status != "ok":
                status = status.replace("|", "/")
            lines.append(
                f"| {bench.name} | {v.label} | {med} | {span} | {len(rec.values)} | "
                f"{status} | {'; '.join(notes)} |"
            )
    return "\n".join(lines)


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | comparison | result | target | met |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for row in rows:
        if row["ratio"] is not None:
            result = f"{row['ratio']:.2f}×"
        elif row["value"] is not None:
            result = row["value_text"]
        else:
            result = "–"
        met = {True: "yes", False: "**no**", None: f"n/a ({row['note']})"}[row["met"]]
        if row["met"] is None and not row["note"]:
            met = "–"
        if row["stretch"] and row["met"] is False:
            met = "no (stretch)"
        lines.append(
            f"| {row['benchmark']} | {row['comparison']} | {result} | {row['target']} | {met} |"
        )
    return "\n".join(lines)


def compare_table(old: dict[str, Any], new: dict[str, Any], old_path: Path) -> str:
    """Markdown: each variant's median now against `old` (a results file)."""
    lines = [
        f"Compared with {old_path} ({old['meta'].get('mode')} run of {old['meta'].get('when')}, "
        f"commit {old['meta'].get('commit')}):",
        "",
        "| benchmark | variant | before | now | change |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, bench in new["benchmarks"].items():
        before = old["benchmarks"].get(name, {}).get("variants", {})
        for key, var in bench["variants"].items():
            was = before.get(key, {}).get("median")
            now = var["median"]
            if was is None or now is None:
                continue
            change = (now / was - 1) * 100
            better = change > 0 if bench["higher_is_better"] else change < 0
            mark = "better" if better else "worse"
            lines.append(
                f"| {name} | {var['label']} | {fmt(was, bench['unit'])} | "
                f"{fmt(now, bench['unit'])} | {change:+.0f}% ({mark}) |"
            )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("trio", "trio-overseer", "attrs", "supervisor", "circus", "honcho"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trio_overseer benchmarks: each against its baseline, in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, smaller sizes (under a minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="after the run, compare each median with an earlier results file",
    )
    args = parser.parse_args(argv)

    names = list(BENCHMARKS)
    if args.only:
        wanted = [n for item in args.only for n in item.split(",") if n]
        unknown = [n for n in wanted if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        names = [n for n in BENCHMARKS if n in wanted]

    plans: list[Bench] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        plans.append(module.plan(args.quick))
    if args.list:
        for bench in plans:
            print(f"{bench.name:14} {bench.title}")
        return 0

    raise_nofile()
    mode = "quick" if args.quick else "full"
    print(
        f"trio_overseer benchmarks ({mode}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    started = time.monotonic()
    done: list[tuple[Bench, dict[str, VariantRecord]]] = []
    target_rows: list[dict[str, Any]] = []
    for bench in plans:
        print(f"== {bench.name}: {bench.title}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        records = run_bench(bench, args.rounds)
        rows = evaluate(bench, records)
        for row in rows:
            if row["value"] is not None:
                row["value_text"] = fmt(row["value"], _target_unit(bench, row))
        done.append((bench, records))
        target_rows.extend(rows)
        print(f"   ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started

    header = (
        f"trio_overseer benchmarks, {mode} run, {_dt.datetime.now().isoformat(timespec='seconds')}"
        f", commit {_git_commit()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f", {elapsed:.0f} s"
    )
    print(f"\n{header}\n")
    print(results_table(done))
    print()
    print(targets_table(target_rows))

    failed = [
        f"{bench.name}/{rec.variant.label}"
        for bench, records in done
        for rec in records.values()
        if rec.failed and rec.variant.role != "peer"
    ]
    report = {
        "meta": {
            "mode": mode,
            "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "platform": platform.platform(),
            "versions": _versions(),
            "elapsed_s": elapsed,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "benchmarks": {
            bench.name: {
                "title": bench.title,
                "unit": bench.unit,
                "higher_is_better": bench.higher_is_better,
                "variants": {key: rec.to_json() for key, rec in records.items()},
            }
            for bench, records in done
        },
        "targets": target_rows,
        "failed": failed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    args.output.write_text(text)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.output.parent / f"{stamp}-{mode}.json").write_text(text)
    print(f"\nresults written to {args.output}", file=sys.stderr)
    if args.compare:
        print()
        print(compare_table(json.loads(args.compare.read_text()), report, args.compare))
    if failed:
        print(f"FAILED correctness checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _target_unit(bench: Bench, row: dict[str, Any]) -> str:
    for t in bench.targets:
        if t.text == row["comparison"]:
            return bench.extras[t.metric][1] if t.metric != "value" else bench.unit
    return bench.unit


__all__ = ["Bench", "Target", "Variant", "main"]

if __name__ == "__main__":
    sys.exit(main())
