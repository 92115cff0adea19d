"""`ray job submit --working-dir . -- python -m jobs.batch_score --spec spec.yaml [--model champion]`:
score the spec's batch input with a registered model on the cluster the job runs in (RAY_ADDRESS
is set by the job runtime). The KubeRay RayJob in cluster/rayjob-batch-score.yaml runs the same
entry point. Exit codes: 0 scored (rows the model could not take are counted and kept with an
`error`), 1 the spec, the input or the model is wrong (nothing written)."""

from __future__ import annotations

import argparse
import sys

from jobs._common import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.batch_score", description=__doc__)
    parser.add_argument("--spec", required=True, help="path to the pipeline spec")
    parser.add_argument("--model", default=None, help="registry alias or version number "
                                                      "(default: the batch option's, champion)")
    parser.add_argument("--input", default=None, help="files to score (default: serving_options "
                                                      "batch input, else the spec's sources)")
    parser.add_argument("--output", default=None, help="where to write (default: the batch option's)")
    parser.add_argument("--format", choices=["parquet", "delta"], default=None)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    def work() -> int:
        from pipeline.execution import quiet_libraries
        from pipeline.scoring import score
        from pipeline.spec import load_spec

        quiet_libraries(args.verbose)
        spec = load_spec(args.spec)
        result = score(spec, model=args.model, input=args.input, output=args.output,
                       format=args.format, verbose=args.verbose,
                       progress=lambda line: print(line, flush=True))
        print("\n".join(result.summary_lines()), flush=True)
        return 0

    return run_job(work, titles={Exception: "cannot score"})


if __name__ == "__main__":
    sys.exit(main())
