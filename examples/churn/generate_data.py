"""Generate the churn example's customer table, deterministically (numpy seed 7).

    python examples/churn/generate_data.py [--rows N] [--out DIR] [--bad-rows K]

Writes DIR/customers.csv (default: 5000 rows into examples/churn/data/). With --bad-rows K it
also writes DIR/customers_bad.csv: the same table where exactly K rows have tenure_months
outside [0, 100] (150, -3, 999, ...) and nothing else is wrong, for tests that expect
validation to fail on column tenure_months, rule range, count K.

The target `churned` is drawn from a logistic model of contract, tenure, monthly charges,
support calls, fiber internet, electronic-check payment and senior status (about 25% positive),
so a logistic regression on the columns reaches an AUC of about 0.85 and an F1 (at 0.5) of
about 0.63.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7
DEFAULT_ROWS = 5000
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
REFERENCE_DATE = date(2025, 6, 30)            # "today" for signup dates
BAD_TENURE_VALUES = (150, -3, 999, 101, -1, 250, -12, 500)

CONTRACTS = np.array(["month-to-month", "one_year", "two_year"])
PAYMENTS = np.array(["electronic_check", "mailed_check", "bank_transfer", "credit_card"])
INTERNET = np.array(["dsl", "fiber_optic", "none"])
COLUMNS = ["customer_id", "user_id", "signup_date", "tenure_months", "monthly_charges",
           "total_charges", "contract", "payment_method", "internet_service", "senior_citizen",
           "num_support_calls", "churned"]


def _choice(rng: np.random.Generator, options: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One draw per row from per-row probabilities (rows of `probs` sum to 1)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None]
    return options[np.minimum((u > cumulative).sum(axis=1), len(options) - 1)]


def generate(rows: int = DEFAULT_ROWS, seed: int = SEED) -> pd.DataFrame:
    """The customer table as a DataFrame (same rows, seed -> same table)."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)

    ids = np.arange(1, rows + 1)
    customer_id = np.char.add("C", np.char.zfill(ids.astype(str), 6))
    user_id = np.char.add("U", np.char.zfill((rng.permutation(rows) * 7 + 100_003).astype(str), 7))

    # Tenure: many new customers, a bump of long-standing ones, the rest spread between.
    kind = rng.random(rows)
    tenure = np.where(kind < 0.30, rng.integers(0, 7, rows),
                      np.where(kind < 0.82, rng.integers(7, 61, rows), rng.integers(61, 73, rows)))
    tenure = tenure.astype(np.int64)

    senior = (rng.random(rows) < 0.16).astype(np.int64)
    internet = rng.choice(INTERNET, size=rows, p=[0.34, 0.44, 0.22])

    # Longer-standing customers more often hold longer contracts.
    t = tenure / 72.0
    contract_probs = np.column_stack([0.75 - 0.55 * t, 0.15 + 0.15 * t, 0.10 + 0.40 * t])
    contract = _choice(rng, CONTRACTS, contract_probs)

    m2m = contract == "month-to-month"
    echeck_share = np.where(m2m, 0.45, 0.18)
    other = (1 - echeck_share) / 3
    payment = _choice(rng, PAYMENTS, np.column_stack([echeck_share, other, other, other]))

    base = np.select([internet == "none", internet == "dsl"], [22.0, 55.0], 85.0)
    monthly = base + rng.normal(0, 9, rows) + np.where(internet == "none", 0, 10 * rng.random(rows))
    monthly = np.round(np.clip(monthly, 18.0, 120.0), 2)

    total = np.round(tenure * monthly * rng.normal(1.0, 0.04, rows), 2)
    total = np.where(tenure == 0, 0.0, np.clip(total, 0.0, None))

    call_rate = 1.2 + 0.8 * (internet == "fiber_optic") + 0.3 * senior
    support_calls = np.clip(rng.poisson(call_rate), 0, 10).astype(np.int64)

    # Month-to-month customers in their first two years churn most (an effect a linear model
    # on the columns only approximates); the other drivers add smaller, plausible shifts.
    early_m2m = m2m & (tenure < 24)
    logit = (-2.45
             + 1.9 * early_m2m + 0.6 * m2m - 0.6 * (contract == "two_year")
             - 0.012 * tenure
             + 0.006 * (monthly - 65)
             + 0.16 * support_calls
             + 0.30 * (internet == "fiber_optic")
             + 0.30 * (payment == "electronic_check")
             + 0.30 * senior)
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    signup = [(REFERENCE_DATE - timedelta(days=int(m * 30.44) + int(d))).isoformat()
              for m, d in zip(tenure, rng.integers(0, 28, rows))]

    df = pd.DataFrame({
        "customer_id": customer_id, "user_id": user_id, "signup_date": signup,
        "tenure_months": tenure, "monthly_charges": monthly, "total_charges": total,
        "contract": contract, "payment_method": payment.astype(object),
        "internet_service": internet, "senior_citizen": senior,
        "num_support_calls": support_calls, "churned": churned,
    }, columns=COLUMNS)

    # Missing values: total_charges for ~1% of rows (never where tenure is 0, where it is 0),
    # payment_method for ~2%.
    candidates = np.flatnonzero(tenure > 0)
    missing_total = rng.choice(candidates, size=min(len(candidates), round(rows * 0.01)), replace=False)
    df.loc[missing_total, "total_charges"] = np.nan
    missing_payment = rng.choice(rows, size=round(rows * 0.02), replace=False)
    df.loc[missing_payment, "payment_method"] = None
    return df


def make_bad(df: pd.DataFrame, bad_rows: int, seed: int = SEED) -> pd.DataFrame:
    """A copy of `df` where exactly `bad_rows` rows have tenure_months outside [0, 100]."""
    if not 0 <= bad_rows <= len(df):
        raise ValueError(f"--bad-rows must be between 0 and the number of rows ({len(df)})")
    bad = df.copy()
    rng = np.random.default_rng(seed + 1)
    picked = np.sort(rng.choice(len(df), size=bad_rows, replace=False))
    values = np.resize(np.array(BAD_TENURE_VALUES, dtype=np.int64), bad_rows)
    bad.loc[bad.index[picked], "tenure_months"] = values
    return bad


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.2f", lineterminator="\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows to generate (5000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--bad-rows", type=int, default=None, metavar="K",
                        help="also write customers_bad.csv with K out-of-range tenure_months")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.bad_rows is not None and not 0 <= args.bad_rows <= args.rows:
        parser.error("--bad-rows must be between 0 and --rows")

    df = generate(args.rows)
    written = [write_csv(df, args.out / "customers.csv")]
    if args.bad_rows is not None:
        written.append(write_csv(make_bad(df, args.bad_rows), args.out / "customers_bad.csv"))
    for path in written:
        print(f"wrote {path} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
