"""`ray job submit --working-dir . -- python -m jobs.train --spec spec.yaml`: a training run on the
cluster the job runs in (RAY_ADDRESS is set by the job runtime)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__)
    parser.add_argument("--spec", required=True, help="path to the pipeline spec")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    from pipeline._internal.progress import Stages
    from pipeline.spec import SpecError, load_spec
    from pipeline.sources import SourceError
    from pipeline.train import RunRefused, run_pipeline
    from pipeline.validation import ValidationFailed

    try:
        spec = load_spec(args.spec)
        result = run_pipeline(spec, stages=Stages(), verbose=args.verbose)
    except SpecError as exc:
        print("spec error:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return 1
    except ValidationFailed as exc:
        print(f"{exc.headline}:\n  " + "\n  ".join(exc.report.failure_lines()), file=sys.stderr)
        return 1
    except SourceError as exc:
        print(f"a source could not be read:\n  {exc}", file=sys.stderr)
        return 1
    except RunRefused as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(f"registered {result.model_name} v{result.model_version} ({result.champion}); "
          f"MLflow run {result.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
