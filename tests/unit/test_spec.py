"""pipeline.spec: the reference spec and the seed's spellings normalise to plain values; every error
names file, line, YAML path and key; secrets never leak; relative paths resolve; the CLI for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.spec import (
    SearchChoice, SearchRange, Spec, SpecError, load_spec, parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "spec-reference.yaml"  # the project's copy of the spec contract
CHURN = ROOT / "examples" / "churn" / "spec.yaml"
RAYLINE = Path(sys.executable).with_name("rayline")

TOKEN = "tok-S3CRET-usage-7f3a"
API_KEY = "key-S3CRET-predict-91c2"
WEBHOOK = "https://hooks.example.com/services/S3CRET-b77d"
REF_ENV = {"USAGE_API_TOKEN": TOKEN, "PREDICT_API_KEY": API_KEY, "ALERT_WEBHOOK_URL": WEBHOOK}
SECRETS = (TOKEN, API_KEY, WEBHOOK)
BASE = "/srv/project"

MINIMAL = """\
name: demo
sources:
  - type: files
    path: data/x.csv
target: y
problem_type: classification
"""


# --------------------------------------------------------------------------- helpers

def spec_of(extra: str = "", base: str = MINIMAL, env=None, base_dir=BASE) -> Spec:
    return parse_spec(base + textwrap.dedent(extra), "spec.yaml", env=env or {}, base_dir=base_dir)


def problems_of(text: str, env=None, filename: str = "spec.yaml") -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, filename, env=env or {}, base_dir=BASE)
    assert info.value.problems, "a SpecError must carry at least one problem"
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing needle."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in the test's spec text"
    return hits[nth - 1]


def one_problem(text: str, env=None) -> str:
    problems = problems_of(text, env=env)
    assert len(problems) == 1, problems
    return problems[0]


def assert_located(problem: str, text: str, marker: str, path: str, *needles: str, nth: int = 1):
    prefix = f"spec.yaml:{line_of(text, marker, nth)}: {path}: "
    assert problem.startswith(prefix), f"{problem!r} should start with {prefix!r}"
    for needle in needles:
        assert needle in problem, f"{needle!r} not in {problem!r}"


def flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with whitespace collapsed."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- the reference spec

@pytest.fixture(scope="module")
def ref() -> Spec:
    return load_spec(REFERENCE, env=REF_ENV, base_dir=BASE)


def test_reference_top_level(ref):
    assert ref.name == "churn"
    assert ref.description == "Predict which customers cancel within 30 days."
    assert ref.seed == 42
    assert ref.target == "churned"
    assert ref.problem_type == "classification"
    assert ref.id_column == "customer_id"
    assert ref.features.exclude == ["signup_date"]
    assert ref.features.include is None
    assert ref.filename == str(REFERENCE)


def test_reference_sources(ref):
    customers, usage, history = ref.sources
    assert (customers.type, customers.name) == ("database", "customers")
    assert customers.query == "SELECT * FROM customers" and customers.table is None
    assert isinstance(customers.connection, SecretStr)
    assert customers.connection.get_secret_value() == f"sqlite:///{BASE}/examples/churn/data/crm.db"

    assert (usage.type, usage.name) == ("api", "usage")
    assert usage.endpoint == "http://127.0.0.1:8765/v1/usage"
    assert usage.authentication.method == "bearer"
    assert isinstance(usage.authentication.token, SecretStr)
    assert usage.authentication.token.get_secret_value() == TOKEN
    assert usage.records_path == "data"
    p = usage.pagination
    assert (p.type, p.param, p.size_param, p.size) == ("page", "page", "per_page", 500)
    # YAML 1.2: `on` is the string key "on", not the boolean True of YAML 1.1.
    assert usage.join is not None
    assert usage.join.on == "customer_id"
    assert usage.join.keys == ["customer_id"]
    assert usage.join.how == "left"
    assert "on" in ref.redacted()["sources"][1]["join"]
    assert True not in ref.redacted()["sources"][1]["join"]

    assert (history.type, history.name, history.format) == ("files", "history", "parquet")
    assert history.inferred_format() == "parquet"
    assert history.path == f"{BASE}/examples/churn/data/history/*.parquet"


def test_reference_expectations(ref):
    exp = ref.expectations
    assert exp.on_failure == "quarantine"
    assert exp.max_bad_fraction == pytest.approx(0.01)
    tenure, contract, churned = exp.columns
    assert (tenure.column, tenure.type, tenure.range, tenure.nullable) == (
        "tenure_months", "numeric", (0.0, 100.0), False)
    assert tenure.rules() == ["type", "range", "nullable"]
    assert contract.values == ["month-to-month", "one_year", "two_year"]
    assert contract.type == "categorical"
    assert churned.values == [0, 1]
    assert all(type(v) is int for v in churned.values)


def test_reference_transformations(ref):
    normalize, encode, create = ref.transformations
    assert normalize.name == "normalize_numeric"
    assert normalize.method == "standard_scaler"
    assert normalize.columns == ["tenure_months", "monthly_charges"]
    assert encode.method == "one_hot"
    assert encode.columns == ["contract", "payment_method"]
    assert create.method is None and create.columns is None
    assert [(d.name, d.formula) for d in create.derived] == [
        ("charges_per_month", "total_charges / tenure_months")]


def test_reference_versioning_split_models(ref):
    dv = ref.data_versioning
    assert dv.tool == "delta"
    assert dv.storage == f"{BASE}/.rayline/data"
    assert dv.tracking == ["raw_data", "processed_data", "feature_store"]
    assert ref.split.ratios == (0.7, 0.15, 0.15)
    assert ref.split.stratify is True
    assert ref.baseline_models == ["logistic_regression", "random_forest", "xgboost"]
    assert ref.advanced_models == ["neural_network", "transformer"]
    assert ref.model_families == ["logistic_regression", "random_forest", "xgboost",
                                  "neural_network", "transformer"]
    assert ref.selection_criteria == ["accuracy", "inference_latency", "interpretability"]
    assert ref.primary_metric == ("accuracy", "max")
    assert ref.model_params == {"xgboost": {"max_depth": 6, "n_estimators": 300},
                                "neural_network": {"hidden_layers": [64, 32], "epochs": 30}}
    assert (ref.scaling.num_workers, ref.scaling.cpus_per_worker, ref.scaling.use_gpu) == (2, 1.0, False)


def test_reference_tuning_search_space(ref):
    t = ref.tuning
    assert (t.method, t.objective, t.n_trials, t.max_concurrent_trials) == ("optuna", "maximize_f1", 100, 2)
    assert t.models == ["xgboost"]
    assert t.objective_parts("classification") == ("max", "f1_score")
    lr, depth, trees = (t.search_space[k] for k in ("learning_rate", "max_depth", "n_estimators"))
    assert isinstance(lr, SearchRange)
    assert (lr.low, lr.high, lr.log, lr.integer) == (0.001, 0.1, True, False)
    assert isinstance(depth, SearchRange)
    assert (depth.low, depth.high, depth.log, depth.integer) == (3, 10, False, True)
    assert isinstance(trees, SearchRange)
    assert (trees.low, trees.high, trees.log, trees.integer) == (100, 1000, False, True)


@pytest.mark.parametrize("written, expected", [
    ("[16, 32, 64]", SearchChoice(values=[16, 32, 64])),
    ("[gbtree, dart]", SearchChoice(values=["gbtree", "dart"])),
    ("[1, 5]", SearchChoice(values=[1, 5])),
    ("0.3", SearchChoice(values=[0.3])),
    ("[0.1, 0.9, uniform]", SearchRange(low=0.1, high=0.9)),
    ("[1, 1000, log_int]", SearchRange(low=1, high=1000, log=True, integer=True)),
    ("{low: 1, high: 4, integer: true}", SearchRange(low=1, high=4, integer=True)),
    ("{values: [a, b]}", SearchChoice(values=["a", "b"])),
])
def test_search_space_spellings(written, expected):
    spec = spec_of(f"tuning:\n  search_space:\n    p: {written}\n")
    assert spec.tuning.search_space["p"] == expected


@pytest.mark.parametrize("written, needle", [
    ("[0.1, 0.001, log]", "low 0.1 must be below high 0.001"),
    ("[0, 0.1, log]", "a log range needs low > 0"),
])
def test_search_range_errors(written, needle):
    text = MINIMAL + f"tuning:\n  search_space:\n    lr: {written}\n"
    problems = problems_of(text)
    assert_located(problems[0], text, "lr:", "tuning.search_space.lr", needle)


def test_search_range_error_is_the_only_problem():
    text = MINIMAL + "tuning:\n  search_space:\n    lr: [0.1, 0.001, log]\n"
    assert len(problems_of(text)) == 1


def test_reference_evaluation(ref):
    ev = ref.evaluation
    assert ev.classification == ["accuracy", "precision", "recall", "f1_score", "auc_roc", "confusion_matrix"]
    assert ev.regression == ["mse", "rmse", "mae", "r2_score"]
    cost, business = ev.custom
    assert cost.name == "cost_weighted_error" and cost.formula is None
    assert cost.cost_matrix == [[0.0, 1.0], [5.0, 0.0]]
    assert business.name == "business_metric_1" and business.cost_matrix is None
    assert business.formula == "120 * tp - 20 * fp"
    assert ev.slices == ["contract"]
    assert ev.thresholds == {"f1_score": 0.6, "auc_roc": 0.8}
    assert ref.metric_names == list(ev.classification)


def test_reference_tracking_and_serving(ref):
    assert ref.tracking.uri == f"sqlite:///{BASE}/.rayline/mlflow.db"
    assert ref.tracking.experiment == "churn" and ref.experiment_name == "churn"
    rest, batch, streaming = ref.serving_options
    assert ref.serving("rest_api") is rest and ref.serving("missing") is None
    assert (rest.framework, rest.route_prefix, rest.host, rest.port) == ("ray_serve", "/", "127.0.0.1", 8000)
    a = rest.autoscaling
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 4, 4)
    assert rest.auth.method == "api_key"
    assert len(rest.auth.keys) == 1 and isinstance(rest.auth.keys[0], SecretStr)
    assert rest.auth.keys[0].get_secret_value() == API_KEY
    assert batch.input == f"{BASE}/examples/churn/data/score/*.parquet"
    assert batch.output == f"{BASE}/.rayline/scores"
    assert batch.frequency == "daily"
    assert (streaming.framework, streaming.bootstrap_servers) == ("kafka", "127.0.0.1:9092")
    assert (streaming.input_topic, streaming.output_topic, streaming.dead_letter_topic) == (
        "churn-requests", "churn-predictions", "churn-rejected")
    assert streaming.latency_target == pytest.approx(0.1)


def test_reference_monitoring(ref):
    drift = ref.monitoring.data_drift
    assert drift.tool == "evidently"
    assert drift.frequency == 3600.0
    assert isinstance(drift.alerts.webhook, SecretStr)
    assert drift.alerts.webhook.get_secret_value() == WEBHOOK
    perf = ref.monitoring.model_performance
    assert perf.metrics == ["accuracy", "latency"]
    assert perf.baseline == "training_metrics"
    assert perf.threshold == pytest.approx(0.05)
    infra = ref.monitoring.infrastructure
    assert (infra.tool, infra.dashboards) == ("prometheus", "grafana")


def test_reference_ab_testing_rollback_card(ref):
    ab = ref.ab_testing
    assert ab.mode == "split" and ab.framework == "ray_serve"
    assert ab.traffic_split.control == pytest.approx(0.5)
    assert ab.traffic_split.treatment == pytest.approx(0.5)
    assert ab.assignment_key == "user_id"
    assert ab.success_metrics == ["conversion_rate", "revenue_per_user"]
    assert ab.duration == 1_209_600.0  # 2 weeks in seconds
    assert ab.significance == pytest.approx(0.95)

    rb = ref.rollback
    triggers = [(t.metric, t.op, t.threshold) for t in rb.triggers]
    assert triggers[0] == ("error_rate", ">", pytest.approx(0.05))
    assert triggers[1] == ("latency_p99", ">", pytest.approx(0.5))   # 500ms in seconds
    assert triggers[2] == ("data_drift_score", ">", pytest.approx(0.3))
    assert [t.text for t in rb.triggers] == ["error_rate > 5%", "latency_p99 > 500ms", "data_drift_score > 0.3"]
    assert rb.window == 300.0
    assert rb.procedure == ["automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]

    card = ref.model_card
    assert card.developer == "Customer Analytics"
    assert card.intended_use.startswith("Rank customers")
    assert card.sensitive_features == ["senior_citizen"]


def test_reference_secrets_are_secret_str(ref):
    shown = repr(ref) + str(ref) + json.dumps(ref.model_dump(mode="json"))
    for secret in SECRETS:
        assert secret not in shown
    assert repr(ref.sources[1].authentication.token) == "SecretStr('**********')"


def test_reference_from_process_environment(monkeypatch):
    for name, value in REF_ENV.items():
        monkeypatch.setenv(name, value)
    spec = load_spec(REFERENCE, base_dir=BASE)
    assert spec.sources[1].authentication.token.get_secret_value() == TOKEN
    assert spec.serving("rest_api").auth.keys[0].get_secret_value() == API_KEY
    assert spec.monitoring.data_drift.alerts.webhook.get_secret_value() == WEBHOOK


def test_reference_missing_env_var_names_it_and_its_line(monkeypatch):
    monkeypatch.delenv("USAGE_API_TOKEN", raising=False)
    env = {k: v for k, v in REF_ENV.items() if k != "USAGE_API_TOKEN"}
    with pytest.raises(SpecError) as info:
        load_spec(REFERENCE, env=env, base_dir=BASE)
    line = line_of(REFERENCE.read_text(), "${USAGE_API_TOKEN}")
    assert info.value.problems == [
        f"{REFERENCE}:{line}: sources[1].authentication.token: environment variable "
        f"USAGE_API_TOKEN is not set"]


def test_reference_where(ref):
    text = REFERENCE.read_text()
    assert ref.where("sources", 1, "join") == f"{REFERENCE}:{line_of(text, 'join: {on: customer_id')}"
    assert ref.where("rollback", "triggers", 1) == f"{REFERENCE}:{line_of(text, '- latency_p99 > 500ms')}"
    assert ref.where("expectations", "columns", 0, "column") == f"{REFERENCE}:{line_of(text, '- column: tenure_months')}"
    # a path below what the YAML has falls back to its nearest parent
    assert ref.where("tuning", "search_space", "nope", 3) == f"{REFERENCE}:{line_of(text, 'search_space:')}"


# --------------------------------------------------------------------------- the seed's spellings

SEED_STYLE = """\
name: seed_style
sources:
  - type: database
    connection: sqlite:///crm.db
    query: SELECT * FROM customers
  - type: api
    endpoint: https://api.example.com/v1/usage
    authentication: none
    join: {on: customer_id}
  - type: files
    path: s3://bucket/history/
    format: parquet
target: churned
problem_type: classification
expectations:
  - column: feature_1
    type: numeric
    range: [0, 100]
    nullable: false
  - column: churned
    type: categorical
    values: [0, 1]
transformations:
  - name: normalize_numeric
    columns: [col1, col2]
    method: standard_scaler
  - name: encode_categorical
    columns: [cat1, cat2]
    method: one_hot
  - name: create_features
    derived:
      - name: ratio
        formula: col1 / col2
baseline_models:
  - logistic_regression
  - random_forest
  - xgboost
tuning:
  method: optuna
  objective: maximize_f1
  n_trials: 100
  search_space:
    learning_rate: [0.001, 0.1, log]
    max_depth: [3, 10, int]
    n_estimators: [100, 1000, int]
serving_options:
  - name: rest_api
    framework: fastapi
    containerized: true
    scaling: kubernetes_hpa
  - name: batch
    scheduler: airflow
    frequency: daily
  - name: streaming
    framework: kafka
    latency_target: 100ms
monitoring:
  data_drift:
    tool: evidently
    frequency: hourly
    alerts: slack
  model_performance:
    metrics: [accuracy, latency]
    baseline: training_metrics
    threshold: 0.05 # 5% degradation
  infrastructure:
    tool: prometheus
    dashboards: grafana
ab_testing:
  traffic_split:
    control: 50%
    treatment: 50%
  success_metrics:
    - conversion_rate
    - revenue_per_user
  duration: 2_weeks
  significance: 0.95
rollback:
  triggers:
    - error_rate > 5%
    - latency_p99 > 500ms
    - data_drift_score > 0.3
  procedure: "1. automatic_rollback_to_previous 2. alert_on_call 3. preserve_logs_for_analysis"
"""


@pytest.fixture(scope="module")
def seed_spec() -> Spec:
    return parse_spec(SEED_STYLE, "seed.yaml", env={}, base_dir=BASE)


def test_seed_expectations_as_bare_list(seed_spec):
    exp = seed_spec.expectations
    assert exp.on_failure == "fail"
    assert [c.column for c in exp.columns] == ["feature_1", "churned"]
    assert exp.columns[0].range == (0.0, 100.0)
    assert exp.columns[0].nullable is False
    assert exp.columns[1].values == [0, 1]


def test_seed_authentication_as_string(seed_spec):
    auth = seed_spec.sources[1].authentication
    assert auth.method == "none"
    assert auth.token is None and auth.key is None


def test_seed_procedure_as_one_string(seed_spec):
    assert seed_spec.rollback.procedure == [
        "automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]


def test_seed_procedure_as_folded_multiline_scalar():
    # The seed's literal layout: a plain scalar continued on indented lines.
    text = MINIMAL + textwrap.dedent("""\
        rollback:
          procedure: 1. automatic_rollback_to_previous
            2. alert_on_call
            3. preserve_logs_for_analysis
        """)
    spec = parse_spec(text, "spec.yaml", env={}, base_dir=BASE)
    assert spec.rollback.procedure == [
        "automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]
    assert spec.rollback.triggers == [] and spec.rollback.window == 300.0


def test_seed_unknown_procedure_step_is_an_error():
    text = MINIMAL + 'rollback:\n  procedure: "1. automatic_rollback_to_previous 2. page_everyone"\n'
    problem = one_problem(text)
    assert_located(problem, text, "procedure:", "rollback.procedure", "(got 'page_everyone')")


def test_seed_alerts_as_channel_name(seed_spec):
    drift = seed_spec.monitoring.data_drift
    assert drift.alerts.channel == "slack"
    assert drift.alerts.webhook is None
    assert drift.frequency == 3600.0
    assert seed_spec.monitoring.model_performance.threshold == pytest.approx(0.05)


def test_seed_serving_options(seed_spec):
    rest = seed_spec.serving("rest_api")
    assert rest.framework == "fastapi"
    assert rest.containerized is True
    assert rest.scaling == "kubernetes_hpa"
    batch = seed_spec.serving("batch")
    assert batch.scheduler == "airflow"
    assert batch.frequency == "daily"
    assert batch.input is None
    streaming = seed_spec.serving("streaming")
    assert streaming.latency_target == pytest.approx(0.1)


def test_seed_ab_testing_and_triggers(seed_spec):
    ab = seed_spec.ab_testing
    assert (ab.traffic_split.control, ab.traffic_split.treatment) == (0.5, 0.5)
    assert ab.duration == 1_209_600.0
    assert [t.threshold for t in seed_spec.rollback.triggers] == [
        pytest.approx(0.05), pytest.approx(0.5), pytest.approx(0.3)]


def test_seed_other_sections(seed_spec):
    assert seed_spec.sources[0].query == "SELECT * FROM customers"
    assert seed_spec.sources[1].join.keys == ["customer_id"]
    assert seed_spec.sources[2].path == "s3://bucket/history/"
    assert seed_spec.transformations[0].method == "standard_scaler"
    assert seed_spec.transformations[2].derived[0].formula == "col1 / col2"
    assert seed_spec.tuning.search_space["max_depth"].integer is True
    assert seed_spec.model_families == ["logistic_regression", "random_forest", "xgboost"]


@pytest.mark.parametrize("written, seconds", [
    ("100ms", 0.1), ("5m", 300.0), ("2h", 7200.0), ("2_weeks", 1_209_600.0), ("1.5 hours", 5400.0),
    ("hourly", 3600.0), ("daily", 86400.0), ("weekly", 604800.0), ("45", 45.0), ("3 days", 259200.0),
])
def test_durations(written, seconds):
    assert spec_of(f"rollback:\n  window: {written}\n").rollback.window == pytest.approx(seconds)


@pytest.mark.parametrize("control, treatment, c, t", [
    ("50%", "50%", 0.5, 0.5), ("0.9", "0.1", 0.9, 0.1), ("90", "10", 0.9, 0.1), ("12.5%", "87.5%", 0.125, 0.875),
])
def test_traffic_split_spellings(control, treatment, c, t):
    split = spec_of(f"ab_testing:\n  traffic_split: {{control: {control}, treatment: {treatment}}}\n"
                    ).ab_testing.traffic_split
    assert (split.control, split.treatment) == (pytest.approx(c), pytest.approx(t))


@pytest.mark.parametrize("trigger, metric, op, threshold", [
    ("error_rate > 5%", "error_rate", ">", 0.05),
    ("latency_p99 > 500ms", "latency_p99", ">", 0.5),
    ("latency_p95>=2s", "latency_p95", ">=", 2.0),
    ("accuracy_drop > 10%", "accuracy_drop", ">", 0.1),
    ("prediction_drift <= 0.25", "prediction_drift", "<=", 0.25),
])
def test_trigger_spellings(trigger, metric, op, threshold):
    t = spec_of(f"rollback:\n  triggers: ['{trigger}']\n").rollback.triggers[0]
    assert (t.metric, t.op, t.threshold, t.text) == (metric, op, pytest.approx(threshold), trigger)


def test_defaults_when_sections_are_absent():
    spec = spec_of()
    assert spec.seed == 42
    assert spec.expectations.columns == [] and spec.expectations.on_failure == "fail"
    assert spec.serving_options == [] and spec.tuning is None
    assert spec.ab_testing is None and spec.rollback is None
    assert spec.model_families == ["logistic_regression", "xgboost"]
    assert spec.primary_metric == ("f1_score", "max")
    assert spec.experiment_name == "demo"
    reg = spec_of(base=MINIMAL.replace("classification", "regression"),
                  extra="baseline_models: [linear_regression]\n")
    assert reg.primary_metric == ("rmse", "min")
    assert reg.metric_names == ["mse", "rmse", "mae", "r2_score"]


# --------------------------------------------------------------------------- error paths

def test_empty_file(tmp_path):
    for name, content in (("empty.yaml", ""), ("comments.yaml", "# nothing yet\n")):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert info.value.problems == [f"{path}: the spec is empty"]


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such spec file"]


@pytest.mark.parametrize("text, line", [
    ("name: x\ntarget: [a, b\nproblem_type: c\n", 3),
    ("name: x\nsources:\n  - type: files\n   path: a.csv\n", 4),
    ("name: x\n\tseed: 1\n", 2),
    ("name: x\nname: y\n", 2),
])
def test_invalid_yaml_reports_line(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:{line}: not valid YAML: ")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(text):
    assert problems_of(text) == ["spec.yaml:1: the spec must be a mapping of sections"]


def test_misspelt_top_level_key():
    text = MINIMAL + "seeds: 3\n"
    assert problems_of(text) == [
        f"spec.yaml:{line_of(text, 'seeds:')}: seeds: unknown key 'seeds' (did you mean 'seed'?)"]


def test_misspelt_key_far_down_a_real_spec(tmp_path):
    text = REFERENCE.read_text().replace("  window: 5m", "  windw: 5m")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, env=REF_ENV)
    assert info.value.problems == [
        f"{path}:{line_of(text, 'windw:')}: rollback.windw: unknown key 'windw' (did you mean 'window'?)"]


@pytest.mark.parametrize("extra, marker, path, key, hint", [
    ("serving_options:\n  - name: rest_api\n    prot: 8080\n", "prot:", "serving_options[0].prot", "prot", "port"),
    ("split:\n  ratio: [0.7, 0.15, 0.15]\n", "ratio:", "split.ratio", "ratio", "ratios"),
    ("expectations:\n  columns:\n    - column: a\n      nulable: false\n", "nulable:",
     "expectations.columns[0].nulable", "nulable", "nullable"),
    ("expectations:\n  - column: a\n    rnage: [0, 1]\n", "rnage:", "expectations[0].rnage", "rnage", "range"),
    ("monitoring:\n  data_drift:\n    alerts: slack\n    frequncy: hourly\n", "frequncy:",
     "monitoring.data_drift.frequncy", "frequncy", "frequency"),
    ("tuning:\n  search_space: {}\n  n_trails: 5\n", "n_trails:", "tuning.n_trails", "n_trails", "n_trials"),
])
def test_misspelt_nested_key(extra, marker, path, key, hint):
    text = MINIMAL + extra
    assert problems_of(text) == [
        f"spec.yaml:{line_of(text, marker)}: {path}: unknown key {key!r} (did you mean {hint!r}?)"]


def test_misspelt_key_inside_a_source():
    text = MINIMAL.replace("    path: data/x.csv", "    path: data/x.csv\n    fromat: csv")
    assert problems_of(text) == [
        f"spec.yaml:{line_of(text, 'fromat:')}: sources[0].fromat: unknown key 'fromat' (did you mean 'format'?)"]


def test_unknown_key_without_a_close_match_has_no_hint():
    text = MINIMAL + "zzqqxx: 1\n"
    assert problems_of(text) == [f"spec.yaml:{line_of(text, 'zzqqxx')}: zzqqxx: unknown key 'zzqqxx'"]


def test_several_problems_are_all_reported():
    text = MINIMAL + "seeds: 3\nsplit:\n  ratio: [0.7, 0.15, 0.15]\n"
    problems = sorted(problems_of(text), key=lambda p: int(p.split(":")[1]))
    assert len(problems) == 2
    assert problems[0].startswith(f"spec.yaml:{line_of(text, 'seeds:')}: seeds: ")
    assert problems[1].startswith(f"spec.yaml:{line_of(text, 'ratio:')}: split.ratio: ")


@pytest.mark.parametrize("extra, marker, path, needles", [
    ("seed: abc\n", "seed:", "seed", ["valid integer", "(got 'abc')"]),
    ('serving_options:\n  - name: rest_api\n    port: "abc"\n', "port:", "serving_options[0].port",
     ["valid integer", "(got 'abc')"]),
    ("serving_options:\n  - name: rest_api\n    port: 70000\n", "port:", "serving_options[0].port",
     ["less than or equal to 65535", "(got 70000)"]),
    ("split:\n  stratify: maybe\n", "stratify:", "split.stratify", ["valid boolean", "'maybe'"]),
    ("expectations:\n  columns:\n    - column: a\n      range: [10, 1]\n", "range:",
     "expectations.columns[0].range", ["range low 10.0 is above high 1.0"]),
    ("expectations:\n  columns:\n    - column: a\n      regex: '[a-'\n", "regex:",
     "expectations.columns[0].regex", ["not a valid regular expression"]),
    ("rollback:\n  window: soon\n", "window:", "rollback.window", ["expected a duration", "'soon'"]),
    ("ab_testing:\n  traffic_split: {control: 150%, treatment: 50%}\n", "traffic_split:",
     "ab_testing.traffic_split.control", ["between 0% and 100%"]),
])
def test_wrong_type(extra, marker, path, needles):
    text = MINIMAL + extra
    assert_located(one_problem(text), text, marker, path, *needles)


def test_missing_required_key_target():
    text = MINIMAL.replace("target: y\n", "")
    assert problems_of(text) == ["spec.yaml:1: (top level): missing required key 'target'"]


def test_missing_required_keys_all_named():
    problems = problems_of("name: x\n")
    assert sorted(problems) == sorted(
        f"spec.yaml:1: (top level): missing required key {k!r}" for k in ("sources", "target", "problem_type"))


def test_missing_required_nested_key():
    text = MINIMAL.replace("    path: data/x.csv\n", "")
    assert_located(one_problem(text), text, "- type: files", "sources[0]", "missing required key 'path'")


def test_missing_env_var_names_variable_and_line():
    text = MINIMAL + "description: ${RAYLINE_TEST_UNSET_VAR}\n"
    assert problems_of(text) == [
        f"spec.yaml:{line_of(text, 'description:')}: description: environment variable "
        f"RAYLINE_TEST_UNSET_VAR is not set"]


def test_missing_env_var_inside_a_list():
    text = MINIMAL + 'serving_options:\n  - name: rest_api\n    auth:\n      keys: ["${RAYLINE_TEST_KEY}"]\n'
    [problem] = problems_of(text)
    assert problem == (f"spec.yaml:{line_of(text, 'keys:')}: serving_options[0].auth.keys[0]: "
                       f"environment variable RAYLINE_TEST_KEY is not set")


def test_env_default_is_used_when_unset():
    spec = spec_of("seed: ${RAYLINE_TEST_SEED:-7}\ndescription: 'x${RAYLINE_TEST_EMPTY:-}y'\n")
    assert spec.seed == 7
    assert spec.description == "xy"
    spec = spec_of("seed: ${RAYLINE_TEST_SEED:-7}\n", env={"RAYLINE_TEST_SEED": "11"})
    assert spec.seed == 11


def test_env_substitution_inside_a_string():
    spec = spec_of(base=MINIMAL.replace("data/x.csv", "${DATA_DIR}/x.csv"), env={"DATA_DIR": "/mnt/data"})
    assert spec.sources[0].path == "/mnt/data/x.csv"


def test_unknown_source_type():
    text = MINIMAL.replace("type: files", "type: ftp")
    assert_located(one_problem(text), text, "- type: ftp", "sources[0]", "'ftp'", "'database', 'api', 'files'")


@pytest.mark.parametrize("path", ["data/x.txt", "s3://bucket/prefix/", "data/*"])
def test_files_source_without_recognisable_format(path):
    text = MINIMAL.replace("data/x.csv", path)
    assert_located(one_problem(text), text, "- type: files", "sources[0]",
                   "cannot tell the format", "add format: parquet|csv|json")


@pytest.mark.parametrize("path, fmt", [("a.parquet", "parquet"), ("a.pq", "parquet"), ("b/*.csv", "csv"),
                                       ("c.jsonl", "json"), ("d.ndjson", "json"), ("E.CSV", "csv")])
def test_files_format_inferred(path, fmt):
    spec = spec_of(base=MINIMAL.replace("data/x.csv", path))
    assert spec.sources[0].format is None
    assert spec.sources[0].inferred_format() == fmt


def test_database_with_query_and_table():
    text = MINIMAL.replace("type: files\n    path: data/x.csv",
                           "type: database\n    connection: sqlite:///a.db\n    query: SELECT 1\n    table: t")
    assert_located(one_problem(text), text, "- type: database", "sources[0]", "exactly one of query or table")
    text = MINIMAL.replace("type: files\n    path: data/x.csv", "type: database\n    connection: sqlite:///a.db")
    assert_located(one_problem(text), text, "- type: database", "sources[0]", "exactly one of query or table")


@pytest.mark.parametrize("auth, needs", [
    ("{method: bearer}", "token"), ("{method: api_key}", "key"), ("{method: basic, username: u}", "password"),
])
def test_api_auth_without_credentials(auth, needs):
    text = MINIMAL.replace("type: files\n    path: data/x.csv",
                           f"type: api\n    endpoint: http://h/x\n    authentication: {auth}")
    assert_located(one_problem(text), text, "authentication:", "sources[0].authentication",
                   f"needs {needs}")


def test_api_endpoint_must_be_http():
    text = MINIMAL.replace("type: files\n    path: data/x.csv", "type: api\n    endpoint: ftp://h/x")
    assert_located(one_problem(text), text, "endpoint:", "sources[0].endpoint", "http://")


@pytest.mark.parametrize("ratios, needle", [
    ("[0.7, 0.2, 0.2]", "sum to 1, got [0.7, 0.2, 0.2]"),
    ("[1.2, -0.1, -0.1]", "non-negative"),
    ("[0.0, 0.5, 0.5]", "must be above 0"),
])
def test_ratios_not_summing_to_one(ratios, needle):
    text = MINIMAL + f"split:\n  ratios: {ratios}\n"
    assert_located(one_problem(text), text, "ratios:", "split.ratios", needle)


def test_traffic_split_not_summing_to_100():
    text = MINIMAL + "ab_testing:\n  traffic_split:\n    control: 60%\n    treatment: 50%\n"
    assert_located(one_problem(text), text, "traffic_split:", "ab_testing.traffic_split",
                   "must add up to 100%", "60% + 50%")


@pytest.mark.parametrize("trigger", ["error_rate >> 5%", "error rate > 5%", "error_rate", "> 5%"])
def test_bad_trigger_string(trigger):
    text = MINIMAL + f"rollback:\n  triggers:\n    - '{trigger}'\n"
    assert_located(one_problem(text), text, f"- '{trigger}'", "rollback.triggers[0]",
                   "a trigger reads like", repr(trigger))


def test_unknown_trigger_metric():
    text = MINIMAL + "rollback:\n  triggers:\n    - error_rate > 5%\n    - queue_depth > 100\n"
    assert_located(one_problem(text), text, "queue_depth", "rollback.triggers[1]",
                   "unknown trigger metric 'queue_depth'", "latency_p99")


def test_unknown_metric_in_evaluation_list():
    text = MINIMAL + "evaluation:\n  classification: [accuracy, bogus_metric]\n"
    assert_located(one_problem(text), text, "classification:", "evaluation.classification",
                   "unknown metric(s) bogus_metric")
    text = MINIMAL + "evaluation:\n  regression: [rmse, accuracy]\n"
    assert_located(one_problem(text), text, "regression:", "evaluation.regression",
                   "unknown metric(s) accuracy")


def test_metric_aliases_normalise():
    spec = spec_of("evaluation:\n  classification: [f1, auc]\n  thresholds: {f1: 0.5, roc_auc: 0.7}\n")
    assert spec.evaluation.classification == ["f1_score", "auc_roc"]
    assert spec.evaluation.thresholds == {"f1_score": 0.5, "auc_roc": 0.7}


def test_custom_metric_as_bare_name_seed_style():
    text = MINIMAL + "evaluation:\n  custom:\n    - business_metric_1\n    - cost_weighted_error\n"
    problems = problems_of(text)
    assert len(problems) == 2
    assert_located(problems[0], text, "- business_metric_1", "evaluation.custom[0]",
                   "custom metric 'business_metric_1' needs a definition", "cost_matrix", "formula")
    assert_located(problems[1], text, "- cost_weighted_error", "evaluation.custom[1]",
                   "custom metric 'cost_weighted_error' needs a definition")


@pytest.mark.parametrize("matrix", ["[[0, 1], [5, 0, 2]]", "[[0, 1, 2], [1, 0, 2]]", "[[0]]"])
def test_cost_matrix_not_square(matrix):
    text = MINIMAL + f"evaluation:\n  custom:\n    - name: cost\n      cost_matrix: {matrix}\n"
    assert_located(one_problem(text), text, "- name: cost", "evaluation.custom[0]", "must be square")


def test_custom_metric_needs_exactly_one_definition():
    text = MINIMAL + ("evaluation:\n  custom:\n    - name: both\n      cost_matrix: [[0, 1], [1, 0]]\n"
                      "      formula: tp\n")
    assert_located(one_problem(text), text, "- name: both", "evaluation.custom[0]",
                   "exactly one of cost_matrix or formula")


@pytest.mark.parametrize("formula, needle", [
    ("tp.__class__", "attribute access is not allowed"),
    ("__import__('os').system('x')", "is not allowed"),
    ("__import__('os')", "function '__import__' is not allowed"),
    ("__builtins__", "names starting with '_' are not allowed"),
    ("120 * tp - revenue", "unknown name(s) revenue"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
])
def test_custom_metric_formula_rejected(formula, needle):
    text = MINIMAL + f'evaluation:\n  custom:\n    - name: m\n      formula: "{formula}"\n'
    assert_located(one_problem(text), text, "- name: m", "evaluation.custom[0]", needle)


@pytest.mark.parametrize("formula, needle", [
    ("__import__('os').system('x')", "is not allowed"),
    ("a.__class__", "attribute access is not allowed"),
    ("import os", "not a valid expression"),
    ("__class__", "names starting with '_' are not allowed"),
    ("x[0]", "subscript is not allowed"),
    ("(lambda: 1)()", "not allowed"),
    ("eval('1')", "function 'eval' is not allowed"),
])
def test_derived_formula_rejected(formula, needle):
    text = MINIMAL + ("transformations:\n  - name: create_features\n    derived:\n"
                      f"      - name: f\n        formula: \"{formula}\"\n")
    assert_located(one_problem(text), text, "formula:", "transformations[0].derived[0].formula", needle)


def test_transformation_shape_errors():
    text = MINIMAL + "transformations:\n  - name: t\n    columns: [a]\n"
    assert_located(one_problem(text), text, "- name: t", "transformations[0]", "needs method and columns")
    text = MINIMAL + "transformations:\n  - name: t\n    columns: [a]\n    method: clip\n"
    assert_located(one_problem(text), text, "- name: t", "transformations[0]", "clip needs lower and/or upper")
    text = MINIMAL + "transformations:\n  - name: t\n    columns: [a]\n    method: bogus_scaler\n"
    assert_located(one_problem(text), text, "method:", "transformations[0].method", "'bogus_scaler'")


def test_transformation_method_aliases():
    spec = spec_of("transformations:\n  - {name: a, columns: [x], method: onehot}\n"
                   "  - {name: b, columns: [y], method: imputation}\n")
    assert spec.transformations[0].method == "one_hot"
    assert spec.transformations[1].method == "impute"
    assert spec.transformations[1].strategy == "median"


def test_data_versioning_dvc_rejected():
    text = MINIMAL + "data_versioning:\n  tool: dvc\n  storage: s3://bucket/data\n"
    assert_located(one_problem(text), text, "tool: dvc", "data_versioning.tool", "tool dvc is not supported",
                   "tool: delta")


def test_ab_testing_statsig_rejected():
    text = MINIMAL + "ab_testing:\n  framework: statsig\n"
    problem = one_problem(text)
    assert problem.startswith("spec.yaml:")
    assert "ab_testing" in problem
    assert "framework statsig is not supported" in problem


def test_logistic_regression_in_regression_spec_message():
    text = MINIMAL.replace("classification", "regression") + "baseline_models: [logistic_regression]\n"
    problem = one_problem(text)
    assert "model family logistic_regression does not fit problem_type regression" in problem
    assert "(use linear_regression)" in problem


def test_threshold_on_metric_not_computed_message():
    text = MINIMAL + "evaluation:\n  classification: [accuracy, f1_score]\n  thresholds:\n    auc_roc: 0.8\n"
    problem = one_problem(text)
    assert "evaluation.thresholds.auc_roc: auc_roc is not a metric of this classification spec" in problem
    assert "(known: accuracy, f1_score)" in problem


def test_threshold_on_custom_metric_is_allowed():
    spec = spec_of("evaluation:\n  custom:\n    - {name: value, formula: 120 * tp - 20 * fp}\n"
                   "  thresholds:\n    value: 1000\n")
    assert spec.evaluation.thresholds == {"value": 1000.0}


def test_duplicate_derived_names_message():
    text = MINIMAL + ("transformations:\n  - name: d\n    derived:\n      - name: a\n        formula: x + 1\n"
                      "      - name: a\n        formula: x + 2\n")
    assert "derived feature 'a' is defined twice" in one_problem(text)


def test_join_on_first_source_message():
    text = MINIMAL.replace("    path: data/x.csv", "    path: data/x.csv\n    join: {on: id}")
    assert "the first source cannot have join" in one_problem(text)


def test_other_consistency_messages():
    assert "features.exclude names the target 'y'" in one_problem(MINIMAL + "features:\n  exclude: [y]\n")
    assert "id_column cannot be the target" in one_problem(MINIMAL + "id_column: y\n")
    assert "tuning.objective: bogus is not a metric" in one_problem(MINIMAL + "tuning:\n  objective: maximize_bogus\n")
    assert "selection_criteria[0]: unknown criterion 'bogus'" in one_problem(MINIMAL + "selection_criteria: [bogus]\n")
    assert "sources[1].name: source name 's' is used twice" in one_problem(
        MINIMAL.replace("  - type: files", "  - name: s\n    type: files")
        .replace("target:", "  - name: s\n    type: files\n    path: b.csv\n    join: {on: id}\ntarget:"))
    assert "a cost_matrix needs a classification spec" in one_problem(
        MINIMAL.replace("classification", "regression")
        + "baseline_models: [linear_regression]\nevaluation:\n  custom:\n    - {name: c, cost_matrix: [[0, 1], [1, 0]]}\n")


# Whole-spec checks report each problem at its own key's line and YAML path.

@pytest.mark.parametrize("text, marker, path", [
    pytest.param(MINIMAL + "evaluation:\n  thresholds:\n    rmse: 0.3\n", "rmse:", "evaluation.thresholds.rmse",
                 id="threshold-not-computed"),
    pytest.param(MINIMAL.replace("classification", "regression") + "baseline_models: [logistic_regression]\n",
                 "baseline_models:", "baseline_models[0]", id="logistic-in-regression"),
    pytest.param(MINIMAL + ("transformations:\n  - name: d\n    derived:\n      - name: a\n        formula: x + 1\n"
                            "      - name: a\n        formula: x + 2\n"),
                 "formula: x + 2", "transformations[0].derived[1]", id="duplicate-derived"),
    pytest.param(MINIMAL.replace("    path: data/x.csv", "    path: data/x.csv\n    join: {on: id}"),
                 "join:", "sources[0].join", id="join-on-first-source"),
])
def test_consistency_problem_names_line_and_path(text, marker, path):
    [problem] = problems_of(text)
    line = line_of(text, marker)
    # the duplicate's name line is the line above its formula
    if marker == "formula: x + 2":
        line -= 1
    assert problem.startswith(f"spec.yaml:{line}: {path}"), problem


def test_ab_testing_statsig_names_framework_line():
    text = MINIMAL + "ab_testing:\n  mode: split\n  framework: statsig\n"
    assert_located(one_problem(text), text, "framework: statsig", "ab_testing.framework", "statsig")


def test_consistency_problems_are_separate_entries():
    text = (MINIMAL.replace("    path: data/x.csv", "    path: data/x.csv\n    join: {on: id}")
            + "evaluation:\n  thresholds:\n    rmse: 0.3\n")
    assert len(problems_of(text)) == 2


# --------------------------------------------------------------------------- secrets

@pytest.fixture
def db_spec() -> Spec:
    text = MINIMAL.replace("type: files\n    path: data/x.csv",
                           "type: database\n    connection: postgresql://app:${DB_PASSWORD}@db:5432/crm\n"
                           "    table: customers")
    return parse_spec(text, "spec.yaml", env={"DB_PASSWORD": "pw-S3CRET-42"}, base_dir=BASE)


def test_redacted_keeps_placeholders(ref):
    raw = ref.redacted()
    assert raw["sources"][1]["authentication"]["token"] == "${USAGE_API_TOKEN}"
    assert raw["serving_options"][0]["auth"]["keys"] == ["${PREDICT_API_KEY}"]
    assert raw["monitoring"]["data_drift"]["alerts"]["webhook"] == "${ALERT_WEBHOOK_URL}"
    dumped = json.dumps(raw)
    for secret in SECRETS:
        assert secret not in dumped


def test_redacted_database_password(db_spec):
    assert db_spec.redacted()["sources"][0]["connection"] == "postgresql://app:${DB_PASSWORD}@db:5432/crm"
    assert db_spec.sources[0].connection.get_secret_value() == "postgresql://app:pw-S3CRET-42@db:5432/crm"
    assert "pw-S3CRET-42" not in repr(db_spec)
    assert db_spec.redact("could not connect to postgresql://app:pw-S3CRET-42@db:5432/crm") == \
        "could not connect to postgresql://app:***@db:5432/crm"


def test_redact_masks_every_secret(ref):
    text = f"Authorization: Bearer {TOKEN}; X-API-Key: {API_KEY}; posting to {WEBHOOK}"
    assert ref.redact(text) == "Authorization: Bearer ***; X-API-Key: ***; posting to ***"
    assert ref.redact("nothing secret here") == "nothing secret here"


def test_redact_without_origin_is_identity():
    spec = Spec.model_validate({"name": "x", "sources": [{"type": "files", "path": "/a.csv"}],
                                "target": "y", "problem_type": "classification"})
    assert spec.redact("abc") == "abc"
    assert spec.redacted()["name"] == "x"
    assert spec.where("sources", 0) == "<spec>"


@pytest.mark.parametrize("extra, path", [
    ("seed: ${S}\n", "seed"),
    ("serving_options:\n  - name: rest_api\n    port: ${S}\n", "serving_options[0].port"),
    ("problem_type: ${S}\n", "problem_type"),
    ("split:\n  stratify: ${S}\n", "split.stratify"),
])
def test_wrong_typed_secret_is_not_echoed(extra, path):
    base = MINIMAL.replace("problem_type: classification\n", "") if extra.startswith("problem_type") else MINIMAL
    problems = problems_of(base + extra, env={"S": "hunter2-S3CRET"})
    joined = "\n".join(problems)
    assert "hunter2-S3CRET" not in joined
    assert any(f": {path}: " in p and "'${S}'" in p for p in problems), problems


@pytest.mark.parametrize("extra", [
    "rollback:\n  window: ${S}\n",
    "serving_options:\n  - name: rest_api\n    request_timeout: ${S}\n",
    "ab_testing:\n  traffic_split: {control: '${S}', treatment: 50%}\n",
    "rollback:\n  triggers: ['${S}']\n",
])
def test_wrong_typed_secret_is_not_echoed_by_unit_parsers(extra):
    problems = problems_of(MINIMAL + extra, env={"S": "hunter2-S3CRET"})
    assert "hunter2-S3CRET" not in "\n".join(problems)


# --------------------------------------------------------------------------- relative paths

def test_relative_paths_resolve_against_base_dir():
    spec = spec_of(base=MINIMAL.replace("data/x.csv", "data/*.csv"), extra="""\
        data_versioning:
          storage: ./versions
        tracking:
          uri: sqlite:///mlruns/db.sqlite
          artifact_location: artifacts
        serving_options:
          - name: batch
            input: in/*.parquet
            output: out
        """, base_dir="/b")
    assert spec.sources[0].path == "/b/data/*.csv"
    assert spec.data_versioning.storage == "/b/versions"
    assert spec.tracking.uri == "sqlite:////b/mlruns/db.sqlite"
    assert spec.tracking.artifact_location == "/b/artifacts"
    assert spec.serving("batch").input == "/b/in/*.parquet"
    assert spec.serving("batch").output == "/b/out"


def test_absolute_and_remote_paths_are_kept():
    spec = spec_of(base=MINIMAL.replace("data/x.csv", "s3://bucket/x.csv"), extra="""\
        data_versioning:
          storage: s3://bucket/data
        tracking:
          uri: http://mlflow.internal:5000
        serving_options:
          - name: batch
            input: /abs/in.parquet
            output: gs://bucket/out
        """, base_dir="/b")
    assert spec.sources[0].path == "s3://bucket/x.csv"
    assert spec.data_versioning.storage == "s3://bucket/data"
    assert spec.tracking.uri == "http://mlflow.internal:5000"
    assert spec.serving("batch").input == "/abs/in.parquet"
    assert spec.serving("batch").output == "gs://bucket/out"
    spec = spec_of("tracking:\n  uri: sqlite:////abs/mlflow.db\n", base_dir="/b")
    assert spec.tracking.uri == "sqlite:////abs/mlflow.db"


@pytest.mark.parametrize("connection, resolved", [
    ("sqlite:///data/crm.db", "sqlite:////b/data/crm.db"),
    ("sqlite:////abs/crm.db", "sqlite:////abs/crm.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_database_sqlite_path_resolves(connection, resolved):
    spec = spec_of(base=MINIMAL.replace("type: files\n    path: data/x.csv",
                                        f"type: database\n    connection: '{connection}'\n    table: t"),
                   base_dir="/b")
    assert spec.sources[0].connection.get_secret_value() == resolved


def test_default_tracking_uri_resolves_against_base_dir():
    assert spec_of(base_dir="/b").tracking.uri == "sqlite:////b/.rayline/mlflow.db"


def test_base_dir_defaults_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(MINIMAL, "spec.yaml", env={})
    assert spec.sources[0].path == str(tmp_path / "data" / "x.csv")
    assert spec.tracking.uri == f"sqlite:///{tmp_path}/.rayline/mlflow.db"


@pytest.mark.parametrize("extra, get", [
    ("", lambda s: s.data_versioning.storage),
    ("serving_options:\n  - name: batch\n", lambda s: s.serving("batch").output),
])
def test_default_local_paths_resolve_against_base_dir(extra, get):
    assert os.path.isabs(get(spec_of(extra, base_dir="/b")))


# --------------------------------------------------------------------------- the CLI, for real

def rayline(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "400", **(env or {})}
    for name in REF_ENV:
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run([str(RAYLINE), *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_check_churn_example():
    result = rayline("check", "examples/churn/spec.yaml")
    assert result.returncode == 0, result.stderr
    out = flat(result.stdout)
    assert "examples/churn/spec.yaml is valid" in out
    assert "classification of 'churned', id column 'customer_id', seed 42" in out
    assert "logistic_regression, random_forest, xgboost" in out
    assert "charges_per_month = total_charges / tenure_months" in out


def test_cli_check_misspelt_key(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(MINIMAL + "split:\n  ratioz: [0.7, 0.15, 0.15]\n")
    result = rayline("check", str(path))
    assert result.returncode == 1
    err = flat(result.stderr)
    assert f"{path}:8: split.ratioz: unknown key 'ratioz' (did you mean 'ratios'?)" in err
    assert "is valid" not in result.stdout


@pytest.mark.parametrize("formula", ["__import__('os').system('touch {marker}')", "a.__class__",
                                     "tp.__class__.__bases__"])
@pytest.mark.parametrize("where", ["derived", "custom"])
def test_cli_check_rejects_unsafe_formula(tmp_path, formula, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "spec.yaml"
    formula = formula.format(marker=marker)
    if where == "derived":
        text = MINIMAL + ("transformations:\n  - name: create_features\n    derived:\n"
                          f"      - name: f\n        formula: \"{formula}\"\n")
        located = f"{path}:{line_of(text, 'formula:')}: transformations[0].derived[0].formula:"
    else:
        text = MINIMAL + f"evaluation:\n  custom:\n    - name: m\n      formula: \"{formula}\"\n"
        located = f"{path}:{line_of(text, '- name: m')}: evaluation.custom[0]:"
    path.write_text(text)
    result = rayline("check", str(path))
    assert result.returncode == 1
    err = flat(result.stderr)
    assert located in err
    assert "not allowed" in err
    assert "is valid" not in result.stdout
    assert not marker.exists()


def test_cli_check_reference_does_not_print_secrets():
    result = rayline("check", str(REFERENCE), env=REF_ENV)
    assert result.returncode == 0, result.stderr
    assert "is valid" in flat(result.stdout)
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def test_cli_check_reference_without_env_fails_naming_variable():
    result = rayline("check", str(REFERENCE))
    assert result.returncode == 1
    assert "environment variable USAGE_API_TOKEN is not set" in flat(result.stderr)


def test_cli_check_does_not_print_secrets_inside_urls(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(MINIMAL.replace("type: files\n    path: data/x.csv",
                                    "type: api\n    endpoint: https://h/v1?api_key=${USAGE_API_TOKEN}")
                    + "tracking:\n  uri: http://ml:${PREDICT_API_KEY}@mlflow.internal:5000\n")
    result = rayline("check", str(path), env=REF_ENV)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout and API_KEY not in result.stdout


@pytest.fixture(scope="module")
def schema() -> dict:
    result = rayline("schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _plain_document(path: Path, env: dict) -> dict:
    """The spec as plain data, read as YAML 1.2 (ruamel) with ${VAR} substituted."""
    import io
    import re

    from ruamel.yaml import YAML

    def substitute(node):
        if isinstance(node, dict):
            return {k: substitute(v) for k, v in node.items()}
        if isinstance(node, list):
            return [substitute(v) for v in node]
        if isinstance(node, str):
            return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], node)
        return node

    document = YAML(typ="safe", pure=True).load(io.StringIO(path.read_text()))
    return json.loads(json.dumps(substitute(document)))


def test_cli_schema_is_valid_json_schema(schema):
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert sorted(schema["required"]) == ["name", "problem_type", "sources", "target"]
    assert schema["additionalProperties"] is False


def test_cli_schema_accepts_churn_example_and_rejects_unknown_key(schema):
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    document = _plain_document(CHURN, {})
    assert list(validator.iter_errors(document)) == []
    document["seeds"] = 1
    assert [e.message for e in validator.iter_errors(document)] == [
        "Additional properties are not allowed ('seeds' was unexpected)"]


def test_cli_schema_accepts_spec_reference(schema):
    import jsonschema

    document = _plain_document(REFERENCE, REF_ENV)
    errors = [(list(e.absolute_path), e.message) for e in
              jsonschema.Draft202012Validator(schema).iter_errors(document)]
    assert errors == []


def test_cli_schema_accepts_seed_spellings(schema):
    import io

    import jsonschema
    from ruamel.yaml import YAML

    document = json.loads(json.dumps(YAML(typ="safe", pure=True).load(io.StringIO(SEED_STYLE))))
    errors = [list(e.absolute_path) for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
    assert errors == []


def test_rest_placement_and_replica_cpus():
    spec = spec_of("serving_options:\n  - name: rest_api\n    placement: ingress\n    model_cpus: 1\n")
    rest = spec.serving("rest_api")
    assert (rest.placement, rest.model_cpus, rest.ingress_cpus) == ("ingress", 1.0, 0.25)
    assert spec_of("serving_options:\n  - name: rest_api\n").serving("rest_api").placement == "deployments"
    problem = one_problem(MINIMAL + "serving_options:\n  - name: rest_api\n    placement: router\n")
    assert "placement" in problem and "deployments" in problem and "ingress" in problem
