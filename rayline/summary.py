"""The readable summary `rayline check` prints. Secrets are shown as their ${VAR} placeholders."""

from __future__ import annotations

from rich.table import Table

from pipeline.spec import Spec


def summarize(spec: Spec) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2), title=f"[bold]{spec.name}[/]",
                  title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()

    def add(label: str, text: str) -> None:
        table.add_row(label, spec.redact(text))

    if spec.description:
        add("description", spec.description)
    add("problem", f"{spec.problem_type} of {spec.target!r}"
        + (f", id column {spec.id_column!r}" if spec.id_column else "") + f", seed {spec.seed}")
    raw_sources = spec.redacted().get("sources", [])
    for i, source in enumerate(spec.sources):
        raw = raw_sources[i] if i < len(raw_sources) else {}
        where = {"files": lambda: f"{raw.get('path')} ({source.inferred_format()})",
                 "database": lambda: f"{raw.get('connection')} {source.query or 'table ' + str(source.table)}",
                 "api": lambda: f"{source.endpoint} (auth {source.authentication.method}, "
                                f"pagination {source.pagination.type})"}[source.type]()
        join = f", {source.join.how} join on {', '.join(source.join.keys)}" if source.join else ""
        add(f"source {source.name or i + 1}", f"{source.type}: {where}{join}")
    exp = spec.expectations
    rules = sum(len(c.rules()) for c in exp.columns)
    add("validation", f"{rules} rules on {len(exp.columns)} columns, on failure: {exp.on_failure}"
        + (f" (max bad {exp.max_bad_fraction:.1%})" if exp.on_failure == "quarantine" else ""))
    for t in spec.transformations:
        what = (", ".join(f"{d.name} = {d.formula}" for d in t.derived) if t.derived
                else f"{t.method} on {', '.join(t.columns or [])}")
        add(f"feature {t.name}", what)
    add("split", " / ".join(f"{r:.0%}" for r in spec.split.ratios)
        + (" stratified" if spec.split.stratify and spec.problem_type == "classification" else ""))
    add("models", ", ".join(spec.model_families))
    metric, direction = spec.primary_metric
    then = [c for c in spec.selection_criteria if c not in (metric, "auto")]
    add("selection", f"{'highest' if direction == 'max' else 'lowest'} validation {metric}"
        + (f", then {', '.join(then)}" if then else ""))
    s = spec.scaling
    add("scaling", f"workers {s.num_workers}, CPUs/worker {s.cpus_per_worker}, GPU {'yes' if s.use_gpu else 'no'}")
    if spec.tuning:
        t = spec.tuning
        add("tuning", f"{t.method}, {t.objective}, {t.n_trials} trials over "
            f"{', '.join(t.search_space) or 'defaults'}")
    ev = spec.evaluation
    add("metrics", ", ".join(spec.metric_names) + (f"; custom {', '.join(c.name for c in ev.custom)}" if ev.custom else ""))
    if ev.thresholds:
        add("thresholds", ", ".join(f"{k} ≥ {v}" for k, v in ev.thresholds.items()))
    add("tracking", f"{spec.tracking.uri}, experiment {spec.experiment_name!r}")
    add("versioning", f"{spec.data_versioning.tool} at {spec.data_versioning.storage}")
    for option in spec.serving_options:
        if option.name == "rest_api":
            detail = f"Ray Serve on {option.host}:{option.port}{option.route_prefix}"
            if option.autoscaling:
                a = option.autoscaling
                detail += f", {a.min_replicas}-{a.max_replicas} replicas"
            if option.auth:
                detail += f", auth {option.auth.method}"
        elif option.name == "batch":
            detail = f"{option.input or 'the sources'} -> {option.output}" + (f", {option.frequency}" if option.frequency else "")
        else:
            detail = f"kafka {option.input_topic} -> {option.output_topic} at {option.bootstrap_servers}"
        add(f"serving {option.name}", detail)
    m = spec.monitoring
    if m.data_drift or m.model_performance:
        parts = []
        if m.data_drift:
            parts.append(f"drift ({m.data_drift.tool}, every {m.data_drift.frequency:g} s)")
        if m.model_performance:
            parts.append(f"performance (alert at {m.model_performance.threshold:.0%} degradation)")
        add("monitoring", ", ".join(parts))
    if spec.ab_testing:
        ab = spec.ab_testing
        add("A/B test", f"{ab.mode}: control {ab.traffic_split.control:.0%} / treatment "
            f"{ab.traffic_split.treatment:.0%}, by {ab.assignment_key or 'request'}")
    if spec.rollback:
        add("rollback", "; ".join(t.text for t in spec.rollback.triggers) or "manual")
    return table
