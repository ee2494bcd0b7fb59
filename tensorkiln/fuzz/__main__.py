"""`python -m tensorkiln.fuzz`: run a fuzz campaign, or replay a saved finding.

    python -m tensorkiln.fuzz --target all --minutes 60          # the hour-long campaign of issue 18
    python -m tensorkiln.fuzz --target engine --cases 2000 --jobs 2
    python -m tensorkiln.fuzz --replay fuzz-findings/engine/traceback-0123456789.bin

The exit status is 1 when the campaign found tracebacks, mismatches, crashes or hangs, else 0.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .case import FINDINGS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tensorkiln.fuzz", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="all",
                        help="engine, onnx, caffe, inputs, selftest, a comma-separated list, or all (default)")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--minutes", type=float,
                       help="time for all targets together, split by --share (default: the split that gives the "
                            "hour-long campaign its counts of issue 18)")
    limit.add_argument("--cases", type=int, help="cases per target")
    parser.add_argument("--share", type=parse_shares, default={},
                        help="weights of the targets in the split of --minutes, e.g. engine=1,onnx=3 (a target not "
                             "named keeps its default weight)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes running side by side (default 1)")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"),
                        help="where findings and summary.json go (default ./fuzz-findings)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds after which a case is a hang")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit of each worker (GiB)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed: the same seed makes the same cases")
    parser.add_argument("--real-seeds", type=Path,
                        help="also mutate the small models under this folder (e.g. ../shared/models)")
    parser.add_argument("--replay", type=Path, help="run one saved case in this process and report its outcome")
    return parser.parse_args(argv)


def parse_shares(text: str) -> dict[str, float]:
    shares = {}
    for item in filter(None, text.split(",")):
        name, _, weight = item.partition("=")
        try:
            shares[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not TARGET=WEIGHT (e.g. onnx=3)") from None
        if not shares[name.strip()] > 0:
            raise argparse.ArgumentTypeError(f"the weight of {name!r} must be > 0")
    return shares


def replay(path: Path, memory_gb: float) -> int:
    from .case import OK, Case
    from .targets import run_case
    from .worker import limit_memory

    case = Case.decode(path.read_bytes())
    print(f"replaying a {case.target} case (seed {case.info.get('seed', '-')}):")
    for mutation in case.info.get("mutations", []):
        print(f"  - {mutation}")
    limit_memory(int(memory_gb * (1 << 30)))
    with tempfile.TemporaryDirectory(prefix="tkfuzz-replay-") as folder:
        outcome = run_case(case, Path(folder))
    print(f"outcome: {outcome.kind} at stage {outcome.stage}"
          + (f": {outcome.error_type} at {outcome.where}: {outcome.message}" if outcome.kind != OK else ""))
    if outcome.detail:
        print(outcome.detail)
    return 1 if outcome.kind in FINDINGS else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay:
        return replay(args.replay, args.memory_gb)
    from .runner import DEFAULT_SHARES, CampaignConfig, format_report, run_campaign
    from .seeds import build_bundle
    from .targets import CAMPAIGN_TARGETS, target_names

    targets = CAMPAIGN_TARGETS if args.target == "all" else tuple(args.target.split(","))
    unknown = sorted(set(targets) - set(target_names()))
    if unknown:
        print(f"fuzz: unknown target(s) {unknown}; the targets are {target_names()}", file=sys.stderr)
        return 2
    cases = args.cases if args.cases is not None or args.minutes is not None else 100
    config = CampaignConfig(targets, args.findings, args.minutes * 60 if args.minutes else None, cases, args.timeout,
                            int(args.memory_gb * (1 << 30)), args.seed, args.jobs, {**DEFAULT_SHARES, **args.share})
    print("fuzz: building the seeds ...", flush=True)
    bundle = build_bundle(args.real_seeds)
    for name, error in bundle.build_errors.items():
        print(f"fuzz: seed {name} built no engine: {error}")
    results = run_campaign(config, bundle, lambda line: print(line, flush=True))
    print(format_report(results))
    print(f"fuzz: summary in {args.findings / 'summary.json'}")
    return 1 if any(stats.kinds[k] for stats in results.values() for k in FINDINGS) else 0


if __name__ == "__main__":
    sys.exit(main())
