"""The campaign runner: makes cases (mutations of the seeds), runs them in worker processes, and counts and saves
what happens.

Each target gets its share of the time (or a number of cases). A case that ends in a traceback, a mismatch, a
crash (the worker died) or a hang (past the time limit) is a finding: the first case of each signature (kind,
exception type, place) is saved under `<findings>/<target>/<kind>-<hash>.bin` with a `.txt` beside it (the
traceback, the mutations, the replay command), and replaced by a later case of the same signature only when that
one took fewer mutations. A crashed or hung worker is replaced by a fresh one and the campaign goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .case import CRASH, FINDINGS, HANG, KINDS, SKIPPED, Case, Outcome
from .choices import RandomChoices
from .seeds import SeedBundle
from .targets import get_target
from .worker import read_message, write_message

STARTUP_SECONDS = 180.0  # imports and kernel registration of a fresh worker on a loaded machine
LOG_LIMIT_BYTES = 20 << 20  # a worker's stderr log is emptied between cases past this size
PROGRESS_SECONDS = 30.0
# The split of --minutes (weights). Even: one worker on the shared 2-core machine ran about 19,000 engine, 4,300
# ONNX, 4,500 Caffe and 15,000 input cases a minute (13:24 UTC 2026-12-02), so 15 minutes each give the hour
# ~280,000 / ~64,000 / ~68,000 cases against issue 18's 10,000 / 5,000 / 2,000.
DEFAULT_SHARES = {"engine": 1.0, "onnx": 1.0, "caffe": 1.0, "inputs": 1.0}
_END = object()  # what next() gives when a case source runs out
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclasses.dataclass(frozen=True)
class CampaignConfig:
    targets: tuple[str, ...]
    findings_dir: Path
    seconds: float | None = None  # for all targets together, split by `shares`
    cases: int | None = None  # per target; the campaign ends at whichever limit comes first
    case_timeout: float = 20.0  # a case running longer is a hang
    memory_limit_bytes: int = 4 << 30  # RLIMIT_AS of each worker
    seed: int = 0
    jobs: int = 1  # workers running cases side by side
    # each target's weight in the split of `seconds` (a target not named weighs 1): the default gives the slow
    # targets (ONNX and Caffe build an engine per case) the time they need for their counts of issue 18
    shares: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SHARES))


@dataclasses.dataclass
class TargetStats:
    target: str
    cases: int = 0
    seconds: float = 0.0
    kinds: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    stages: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # "kind at stage"
    mutator_errors: int = 0
    findings: dict[str, dict] = dataclasses.field(default_factory=dict)  # signature -> count, message, file

    @property
    def per_minute(self) -> float:
        return self.cases / self.seconds * 60 if self.seconds else 0.0

    def to_json(self) -> dict:
        return {"target": self.target, "cases": self.cases, "seconds": round(self.seconds, 1),
                "cases_per_minute": round(self.per_minute, 1), "kinds": {k: self.kinds[k] for k in KINDS},
                "stages": dict(self.stages.most_common()), "mutator_errors": self.mutator_errors,
                "findings": self.findings}


class WorkerProcess:
    """One worker: a subprocess running tensorkiln.fuzz.worker, its log, and the case it is running."""

    def __init__(self, index: int, config: CampaignConfig):
        self.index, self.config = index, config
        self.log_path = config.findings_dir / ".workers" / f"worker-{index}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.case: Case | None = None
        self.started = 0.0
        self.log_offset = 0

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tensorkiln.fuzz.worker", str(self.config.memory_limit_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        ready = self._wait_readable(STARTUP_SECONDS) and read_message(self.process.stdout)
        if not ready:
            raise RuntimeError(f"fuzz worker {self.index} did not start; see {self.log_path}:\n{self.log_tail()}")

    def _wait_readable(self, seconds: float) -> bool:
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            return bool(selector.select(seconds))

    def send(self, case: Case) -> None:
        if self.log_path.stat().st_size > LOG_LIMIT_BYTES:
            os.truncate(self.log_path, 0)
        self.log_offset = self.log_path.stat().st_size
        self.case, self.started = case, time.monotonic()
        try:
            write_message(self.process.stdin, case.encode())
        except BrokenPipeError:  # it died after its last answer: read_outcome reports the crash
            pass

    def read_outcome(self) -> Outcome:
        """The answer to the running case, or a CRASH outcome when the worker died instead."""
        message = read_message(self.process.stdout)
        if message is not None:
            return Outcome.from_json(json.loads(message))
        code = self.process.wait()
        name = signal.Signals(-code).name if code < 0 and -code in signal.Signals._value2member_map_ else \
            f"exit {code}"
        tail = self.log_tail()
        if not _FRAME.search(tail):  # seen once: a SIGSEGV whose faulthandler dump was not yet readable here
            time.sleep(0.5)
            tail = self.log_tail()
        seconds = round(time.monotonic() - self.started, 3)
        if _died_in_reference(tail):  # onnxruntime's bug, not tensorkiln's: the case has no reference
            return Outcome(SKIPPED, name, "onnxruntime", f"onnxruntime (the reference) died ({name})", tail, seconds,
                           "reference")
        return Outcome(CRASH, name, _innermost_frame(tail), f"the worker died ({name})", tail, seconds, "?")

    def kill_hung(self) -> Outcome:
        """Dump the hung worker's stack (faulthandler on SIGUSR1), then kill it."""
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        self.process.kill()
        self.process.wait()
        tail = self.log_tail()
        return Outcome(HANG, "Timeout", _innermost_frame(tail), f"no answer after {self.config.case_timeout:g} s",
                       tail, round(time.monotonic() - self.started, 3), "?")

    def log_tail(self, limit: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _died_in_reference(text: str) -> bool:
    """Whether the fatal signal hit inside onnxruntime (the ONNX target's reference, run after tensorkiln gave
    its outputs): the innermost frame of faulthandler's dump (most recent call first) is onnxruntime's. Some
    mutated models (a Max with an empty input name) make onnxruntime itself segfault."""
    frames = _FRAME.findall(text)
    return bool(frames) and "/onnxruntime/" in frames[0][0].replace("\\", "/")


def _innermost_frame(text: str) -> str:
    """The first tensorkiln frame (not the fuzzer's) of a faulthandler dump (most recent call first), else the
    first frame."""
    frames = _FRAME.findall(text)
    for path, line in frames:
        if "/tensorkiln/" in path and "/tensorkiln/fuzz/" not in path:
            return f"{path[path.rindex('/tensorkiln/') + 1:]}:{line}"
    return f"{frames[0][0].rsplit('/', 1)[-1]}:{frames[0][1]}" if frames else "?"


class FindingStore:
    """Saves the first (then the smallest) case of each finding signature, with its story."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, stats: TargetStats, case: Case, outcome: Outcome) -> None:
        signature = outcome.signature
        entry = stats.findings.get(signature)
        size = len(case.info.get("mutations", ()))
        stem = f"{outcome.kind}-{hashlib.sha256(signature.encode()).hexdigest()[:10]}"
        path = self.folder / case.target / f"{stem}.bin"
        if entry is not None:
            entry["count"] += 1
            if size >= entry["mutations"]:
                return
        stats.findings[signature] = {"count": entry["count"] if entry else 1, "mutations": size,
                                     "message": outcome.message, "stage": outcome.stage, "file": str(path)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.encode())
        path.with_suffix(".txt").write_text(describe_finding(case, outcome, path))


def describe_finding(case: Case, outcome: Outcome, path: Path) -> str:
    lines = [f"{outcome.kind}: {outcome.error_type} at {outcome.where} (stage {outcome.stage})",
             f"message: {outcome.message}", f"seed: {case.info.get('seed', '-')}", "mutations:"]
    lines += [f"  - {m}" for m in case.info.get("mutations", [])]
    lines += [f"replay: python -m tensorkiln.fuzz --replay {path}", "", outcome.detail]
    return "\n".join(lines)


class Campaign:
    def __init__(self, config: CampaignConfig, bundle: SeedBundle, say: Callable[[str], None] = print):
        self.config, self.bundle, self.say = config, bundle, say
        self.store = FindingStore(config.findings_dir)
        self.workers = [WorkerProcess(i, config) for i in range(max(1, config.jobs))]
        self.last_report = time.monotonic()

    def __enter__(self) -> "Campaign":
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc_info) -> None:
        for worker in self.workers:
            worker.stop()

    def run(self) -> dict[str, TargetStats]:
        with self:
            return {name: self.run_target(name, self._share(name)) for name in self.config.targets}

    def _share(self, name: str) -> float | None:
        """The target's part of `seconds`, in proportion to its weight in `shares`."""
        if not self.config.seconds:
            return None
        weights = {target: self.config.shares.get(target, 1.0) for target in self.config.targets}
        return self.config.seconds * weights[name] / sum(weights.values())

    def run_target(self, name: str, seconds: float | None = None, cases: int | None = None) -> TargetStats:
        """Generated cases of target `name` (case i from the campaign seed, `name` and i) until `cases` (default:
        the configuration's) are run or `seconds` pass."""
        target, stats = get_target(name), TargetStats(name)
        cases = cases if cases is not None else self.config.cases
        indexes = itertools.count() if cases is None else range(cases)
        return self.run_cases(name, (self._make_case(target, name, i, stats) for i in indexes), seconds, stats)

    def run_cases(self, name: str, cases: Iterable[Case | None], seconds: float | None = None,
                  stats: TargetStats | None = None) -> TargetStats:
        """Run `cases` (None: a case the mutator failed to make, already counted) on the workers, side by side,
        until they run out or `seconds` pass; the tests hand it chosen cases, `run_target` generated ones."""
        stats = stats if stats is not None else TargetStats(name)
        start = time.monotonic()
        deadline = start + seconds if seconds else float("inf")
        source, exhausted, busy = iter(cases), False, []
        with selectors.DefaultSelector() as selector:
            while busy or (not exhausted and time.monotonic() < deadline):
                for worker in self.workers:
                    if worker in busy or exhausted or time.monotonic() >= deadline:
                        continue
                    case = next(source, _END)
                    if case is _END:
                        exhausted = True
                    elif case is not None:
                        worker.send(case)
                        selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
                        busy.append(worker)
                self._collect(selector, busy, stats)
                self._progress(stats, start)
        stats.seconds = time.monotonic() - start
        return stats

    def _make_case(self, target, name: str, index: int, stats: TargetStats) -> Case | None:
        seed = int.from_bytes(hashlib.sha256(f"{self.config.seed}:{name}:{index}".encode()).digest()[:8], "little")
        try:
            return target.mutate(RandomChoices(seed), self.bundle)
        except Exception as error:  # noqa: BLE001 - a mutator bug must not end the campaign; it is counted
            stats.mutator_errors += 1
            if stats.mutator_errors <= 3:
                self.say(f"fuzz: mutator of {name} failed on case {index}: {type(error).__name__}: {error}")
            return None

    def _collect(self, selector: selectors.BaseSelector, busy: list, stats: TargetStats) -> None:
        if not busy:
            return
        now = time.monotonic()
        wait = max(0.0, min(w.started + self.config.case_timeout for w in busy) - now)
        ready = {key.data for key, _ in selector.select(min(wait, 1.0))}
        for worker in list(busy):
            if worker in ready:
                outcome = worker.read_outcome()
            elif time.monotonic() - worker.started > self.config.case_timeout:
                outcome = worker.kill_hung()
            else:
                continue
            selector.unregister(worker.process.stdout)
            busy.remove(worker)
            self._record(stats, worker.case, outcome)
            if outcome.kind in (CRASH, HANG):
                self.say(f"fuzz: {outcome.kind} in {stats.target} ({outcome.error_type} at {outcome.where}); "
                         "starting a new worker")
                worker.start()

    def _record(self, stats: TargetStats, case: Case, outcome: Outcome) -> None:
        stats.cases += 1
        stats.kinds[outcome.kind] += 1
        stats.stages[f"{outcome.kind} at {outcome.stage}"] += 1
        if outcome.kind in FINDINGS:
            self.store.save(stats, case, outcome)

    def _progress(self, stats: TargetStats, start: float) -> None:
        now = time.monotonic()
        if now - self.last_report < PROGRESS_SECONDS:
            return
        self.last_report = now
        found = sum(stats.kinds[k] for k in FINDINGS)
        self.say(f"fuzz: {stats.target}: {stats.cases} cases in {now - start:.0f} s, {found} findings "
                 f"({len(stats.findings)} distinct)")


def run_campaign(config: CampaignConfig, bundle: SeedBundle, say: Callable[[str], None] = print
                 ) -> dict[str, TargetStats]:
    """Run the campaign, write `<findings>/summary.json`, and return the statistics per target."""
    results = Campaign(config, bundle, say).run()
    write_summary(config, bundle, results)
    return results


def write_summary(config: CampaignConfig, bundle: SeedBundle, results: dict[str, TargetStats]) -> Path:
    """`<findings>/summary.json`: the configuration, the seeds that built no engine, and per target the cases,
    seconds, rate, outcome kinds, "kind at stage" counts, mutator errors and findings (signature -> count,
    smallest case's mutations, message, stage, saved file)."""
    config.findings_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": {**dataclasses.asdict(config), "findings_dir": str(config.findings_dir)},
               "seed_build_errors": bundle.build_errors, "targets": [s.to_json() for s in results.values()]}
    path = config.findings_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    return path


def format_report(results: dict[str, TargetStats]) -> str:
    columns = ("cases", "per min", *KINDS)
    rows = [f"{'target':<9}" + "".join(f"{c:>10}" for c in columns)]
    for stats in results.values():
        values = (stats.cases, f"{stats.per_minute:.0f}", *(stats.kinds[k] for k in KINDS))
        rows.append(f"{stats.target:<9}" + "".join(f"{v:>10}" for v in values))
    for stats in results.values():
        for signature, entry in sorted(stats.findings.items(), key=lambda item: -item[1]["count"]):
            rows.append(f"  {stats.target}: {entry['count']:>5} x {signature}: {entry['message'][:100]}")
            rows.append(f"           {entry['file']}")
    return "\n".join(rows)
