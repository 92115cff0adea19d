"""`rayline serve [build]`, `rayline ab set|start|stop`, `rayline stream`, `rayline score`: the
commands that join the library and the Serve app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rayline.cli import SpecArg, app, err, fail, load, out, reporting


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def serve(spec_or_build: str = typer.Argument(..., metavar="SPEC | build SPEC",
                                              help="The spec to serve; or `build SPEC` to write its Serve config."),
          build_spec: Optional[Path] = typer.Argument(None, hidden=True),
          host: Optional[str] = typer.Option(None, help="Bind address (default: the spec's, 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, help="HTTP port (default: the spec's, 8000)."),
          model: str = typer.Option("champion", help="Registry alias or version number to serve as control."),
          treatment: Optional[str] = typer.Option(None, help="A version (or alias) to serve as the A/B "
                                                             "treatment (default: @challenger, with ab_testing)."),
          output: Path = typer.Option(Path("serve_config.yaml"), "--output", "-o",
                                      help="With `build`: where to write the Serve config."),
          detach: bool = typer.Option(False, help="Deploy and return, leaving the app on the "
                                                  "cluster at RAY_ADDRESS."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Serve the registered model over HTTP with Ray Serve, or `serve build` its Serve config."""
    from serve.run import serve_forever

    if spec_or_build == "build":
        if build_spec is None:
            fail("missing spec", ["usage: rayline serve build SPEC [-o serve_config.yaml]"])
        return _serve_build(load(build_spec), host, port, model, treatment, output)
    if build_spec is not None:
        fail("unexpected argument", [f"{build_spec}: did you mean `rayline serve build {spec_or_build}`?"])
    spec = load(Path(spec_or_build))
    with reporting(titles={LookupError: "cannot serve"}):
        serve_forever(spec, host=host, port=port, model_ref=model, treatment=treatment, detach=detach,
                      verbose=verbose, console=err)


def _serve_build(spec, host, port, model, treatment, output: Path) -> None:
    import yaml

    from serve.run import ingress_config, resolve_variants, serve_config

    rest = spec.serving_or_defaults("rest_api")
    with reporting(titles={LookupError: "cannot build"}):
        variants = resolve_variants(spec, model, treatment)
    # A config for a cluster binds every interface unless the spec's rest_api says where.
    default_host = rest.host if spec.serving("rest_api") else "0.0.0.0"
    config = serve_config(spec, variants, host or default_host, port or rest.port, ingress_config(spec))
    output.write_text("# Ray Serve config for `serve deploy` or a KubeRay RayService (spec.serveConfigV2).\n"
                      "# The spec's ${VAR}s are read from the cluster's environment.\n"
                      + yaml.safe_dump(config, sort_keys=False, width=100))
    out.print(f"[green]✓[/] wrote {output}: {spec.name} "
              + ", ".join(f"{k} v{v}" for k, v in variants.items()))
    out.print(f"  deploy it: serve deploy {output} --address http://<head>:8265")


ab_app = typer.Typer(help="A/B testing on the running Serve app.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")


def _share(text: str) -> float:
    from pipeline.units import parse_fraction

    try:
        return parse_fraction(text)
    except ValueError as exc:
        fail("not a share", [str(exc)])


@ab_app.command("set")
def ab_set(spec_path: Path = SpecArg,
           treatment: Optional[str] = typer.Option(None, help="Treatment's share of traffic, e.g. 10%."),
           mode: Optional[str] = typer.Option(None, help="split | shadow"),
           reason: str = typer.Option("", help="Why (kept in the lifecycle record).")) -> None:
    """Change the live traffic split (or mode) without restarting replicas."""
    from serve.ab import set_traffic
    from serve.run import ServeError, connect

    spec = load(spec_path)
    if mode not in (None, "split", "shadow"):
        fail("bad mode", [f"--mode is split or shadow, not {mode}"])
    with reporting(titles={ServeError: "cannot change the split"}):
        connect()
        config = set_traffic(spec, _share(treatment) if treatment is not None else None, mode, reason)
    split = config["traffic_split"]
    out.print(f"[green]✓[/] {spec.name}: control {split['control']:.0%} / treatment "
              f"{split['treatment']:.0%} ({config['mode']})")


@ab_app.command("start")
def ab_start(spec_path: Path = SpecArg,
             treatment: str = typer.Option(..., help="The registered version to test as treatment."),
             share: Optional[str] = typer.Option(None, help="Its share of traffic (default: the spec's)."),
             reason: str = typer.Option("", help="Why (kept in the lifecycle record).")) -> None:
    """Put a registered version in as the treatment (it becomes @challenger)."""
    from serve.ab import set_variants
    from serve.run import connect

    spec = load(spec_path)
    with reporting(titles={Exception: "cannot start the test"}):
        connect()
        variants = set_variants(spec, treatment, _share(share) if share else None, reason)
    out.print(f"[green]✓[/] {spec.name}: control v{variants['control']}, treatment v{variants['treatment']}")


@ab_app.command("stop")
def ab_stop(spec_path: Path = SpecArg,
            reason: str = typer.Option("", help="Why (kept in the lifecycle record).")) -> None:
    """Take the treatment out: all traffic to the control."""
    from serve.ab import set_variants
    from serve.run import connect

    spec = load(spec_path)
    with reporting(titles={Exception: "cannot stop the test"}):
        connect()
        variants = set_variants(spec, None, reason=reason)
    out.print(f"[green]✓[/] {spec.name}: control v{variants['control']} takes all traffic")


@app.command()
def stream(spec_path: Path = SpecArg,
           model: Optional[str] = typer.Option(None, help="Registry alias or version number "
                                               "(default: the spec's, champion)."),
           max_messages: Optional[int] = typer.Option(None, "--max-messages", min=1,
                                                      help="Stop after this many input messages."),
           idle_exit: Optional[float] = typer.Option(None, "--idle-exit", min=0, metavar="SECONDS",
                                                     help="Stop after this long with no message."),
           assign: Optional[bool] = typer.Option(None, "--assign/--subscribe", help="Read every partition "
                                                 "directly (no group join; offsets still go to the group) "
                                                 "or join the consumer group (default: the spec's)."),
           partitions: Optional[str] = typer.Option(None, help="Only these input partitions, e.g. 0,2 "
                                                    "(implies --assign)."),
           metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus "
                                                      "metrics on this port (default: off)."),
           metrics_host: str = typer.Option("127.0.0.1", "--metrics-host"),
           verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Score JSON records from the spec's Kafka input topic (serving_options: streaming)."""
    from pipeline.execution import quiet_libraries
    from serve.stream import stream_forever

    spec = load(spec_path)
    quiet_libraries(verbose)
    if spec.serving("streaming") is None:
        fail("nothing to stream", [f"{spec_path}: serving_options has no `name: streaming` entry "
                                   "(bootstrap_servers, input_topic, output_topic, ...)"])
    try:
        parts = [int(p) for p in partitions.split(",")] if partitions else None
    except ValueError:
        fail("bad --partitions", [f"{partitions!r}: expected numbers separated by commas, e.g. 0,2"])
    with reporting(titles={LookupError: "cannot stream"}):
        stats = stream_forever(spec, console=err, model_ref=model, max_messages=max_messages,
                               idle_exit=idle_exit, assign=assign, partitions=parts,
                               metrics_port=metrics_port, metrics_host=metrics_host)
    out.print(json.dumps({"stream": stats.as_dict()}), markup=False, highlight=False, soft_wrap=True)


@app.command()
def score(spec_path: Path = SpecArg,
          model: Optional[str] = typer.Option(None, help="Registry alias or version number "
                                              "(default: the batch option's, champion)."),
          input: Optional[str] = typer.Option(None, "--input", help="Files to score: a path, glob, "
                                              "s3:// or gs:// (default: the batch option's input, "
                                              "else the spec's sources)."),
          output: Optional[str] = typer.Option(None, "--output", help="Where to write (default: the "
                                               "batch option's output)."),
          format: Optional[str] = typer.Option(None, "--format", help="parquet (a folder per run) or "
                                               "delta (appended to the table at the output)."),
          emit_schedule: Optional[Path] = typer.Option(
              None, "--emit-schedule", metavar="DIR", help="Score nothing: write the KubeRay RayJob "
              "and the Kubernetes CronJob for the batch option's frequency into DIR."),
          frequency: Optional[str] = typer.Option(None, help="With --emit-schedule: instead of the "
                                                  "spec's frequency (hourly, daily, weekly, cron)."),
          image: Optional[str] = typer.Option(None, help="With --emit-schedule: the Ray image "
                                              "(default rayproject/ray:2.60.0-py311)."),
          working_dir: Optional[str] = typer.Option(None, "--working-dir", help="With --emit-schedule: "
                                                    "a URL of the project archive for the RayJob's "
                                                    "runtime env (https://, s3://, gs://)."),
          namespace: Optional[str] = typer.Option(None, help="With --emit-schedule: a namespace."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Score a dataset with a registered model (Ray Data actor pool), or emit its schedule."""
    spec = load(spec_path)
    if format not in (None, "parquet", "delta"):
        fail("bad --format", [f"{format!r}: use parquet or delta"])
    if emit_schedule is not None:
        from pipeline.schedule import RAY_IMAGE, emit_schedule as emit

        with reporting():
            paths = emit(spec, str(spec_path), emit_schedule, image=image or RAY_IMAGE,
                         working_dir=working_dir, model=model, namespace=namespace,
                         frequency=frequency)
        for path in paths:
            out.print(f"[green]✓[/] wrote {path}")
        if not working_dir and (image or RAY_IMAGE).startswith("rayproject/ray"):
            err.print("[yellow]note:[/] no --working-dir: the RayJob runs in the image's working "
                      "directory, which must hold the project (see cluster/README.md)")
        return
    from pipeline.execution import quiet_libraries
    from pipeline.scoring import score as run_scoring

    quiet_libraries(verbose)
    with reporting(titles={Exception: "cannot score"}):
        result = run_scoring(spec, model=model, input=input, output=output, format=format,
                             verbose=verbose,
                             progress=lambda line: err.print(line, markup=False, highlight=False))
    for line in result.summary_lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)
