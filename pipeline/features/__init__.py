"""FeaturePipeline: the spec's `transformations`, fitted on the training split, applied everywhere.

Why this is hand-written instead of scikit-learn's ColumnTransformer/Pipeline:

* The fitted state must travel with every model (MLflow artifact, Ray Serve replica, batch job)
  as a plain, safe JSON value. A fitted ColumnTransformer is only persistable with pickle (or
  skops with an allow-list), i.e. loading it runs code; `to_dict()` here is data only, and two
  fitted pipelines are equal exactly when their dicts are equal.
* Serving transforms one JSON record per request. sklearn needs a DataFrame per call (~1 ms of
  pandas overhead before any work) and its encoders/scalers do their own dtype handling, so the
  single-record path and the batch path are not guaranteed to give the same bits. Here both paths
  convert their input into the same canonical numpy arrays (float64 for numbers, canonical
  strings for categories) and then run the very same numpy code, so `transform(df)` and
  `transform_records(records)` give bit-identical float64 output (tested with np.array_equal).
* Derived features use the project's safe formula language (pipeline.formula), which sklearn
  does not know about.

Order of work (fit and transform alike):
  1. read the raw columns: numbers -> float64 (None/NaN/inf -> NaN); booleans -> 0.0/1.0 (the
     implicit `auto_boolean` step); categories -> canonical strings (1, 1.0 and "1" are the same
     category; None/NaN/pd.NA are null);
  2. derived features, in spec order, evaluated on the raw columns (a formula may also read a
     derived feature defined before it); division by zero gives NaN and is counted;
  3. the spec's steps in their order (a column may go through several, e.g. impute then scale);
  4. `auto_one_hot`: every categorical input column no step encoded (at most
     AUTO_ONE_HOT_MAX_CATEGORIES categories, the rest -> `__other__`);
  5. `auto_impute`: every numeric output column gets the training median (0.0 if the column was
     all-null in training), so the output never holds NaN.

Methods, one class each in `steps/` (its docstring has the details), registered by name: the
spec's `method` values, aliases and option keys come from the registry. Fit on the training split
only; NaN is ignored when fitting and stays NaN until an impute step or the final imputation:
  standard_scaler  (x - mean) / std, population std (ddof=0, as sklearn); std 0 -> 1
  min_max_scaler   (x - min) / (max - min); max == min -> divide by 1
  one_hot          one 0/1 column `col=value` per category (sorted training values, or the
                   `categories` given); `col=__null__` if training had nulls; unknown values
                   give an all-zero row and are counted; `max_categories: N` keeps the N most
                   frequent and sends the rest (and unknown values) to `col=__other__`
  ordinal          index in `categories[col]` if given, else in the sorted training values;
                   unknown -> -1 (counted); null -> NaN (so the final imputation fills it)
  impute           strategy mean | median | most_frequent | constant (fill_value). Categorical
                   columns (before encoding) take most_frequent or constant.
  log              log1p(x) for x >= 0; a negative x gives NaN (then the final median imputation)
                   and is counted in stats["negative_log_inputs"]
  clip             np.clip to lower/upper (either may be absent)
  robust_scaler    (x - median) / (q75 - q25), as sklearn's RobustScaler; IQR 0 -> divide by 1
  boolean          (implicit, `auto_boolean`) True -> 1.0, False -> 0.0

Infinite numbers (in the data or from a formula) are treated as null, so fitted values and the
output are always finite.

Modules: `values` (raw values -> canonical arrays), `steps` (the Step contract, the registry and
one module per method), `build` (spec -> steps), `pipeline` (FeaturePipeline), `errors`.
"""

from pipeline.features.errors import FeatureError

__all__ = ["FORMAT", "FORMAT_VERSION", "FeatureError", "FeaturePipeline"]


def __getattr__(name: str):
    # The pipeline imports pandas; the spec imports this package (for the step registry) and
    # must not, so the pipeline module is loaded on first use.
    if name in ("FeaturePipeline", "FORMAT", "FORMAT_VERSION"):
        from pipeline.features import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
