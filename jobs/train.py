"""`ray job submit --working-dir . -- python -m jobs.train --spec spec.yaml`: a training run on the
cluster the job runs in (RAY_ADDRESS is set by the job runtime). Exit codes: 0 registered, 1 the
spec, a source or the data is wrong, 3 trained but nothing registered (thresholds)."""

from __future__ import annotations

import argparse
import sys

from jobs._common import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__)
    parser.add_argument("--spec", required=True, help="path to the pipeline spec")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    def work() -> int:
        from pipeline.progress import Stages
        from pipeline.spec import load_spec
        from pipeline.training import run_pipeline

        spec = load_spec(args.spec)
        result = run_pipeline(spec, stages=Stages(), verbose=args.verbose)
        print(f"registered {result.model_name} v{result.model_version} ({result.champion}); "
              f"MLflow run {result.run_id}")
        return 0

    return run_job(work, "nothing was trained")


if __name__ == "__main__":
    sys.exit(main())
