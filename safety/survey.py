"""`python -m safety.survey`: derive the scikit-learn part of the allow-list from real models.

Fits every estimator scikit-learn lists (and a set of composite models: pipelines, column
transformers, searches, ensembles, text vectorisers), pickles each with joblib and pickle at
several protocols, scans them with a permissive policy that records every global, and writes
`safety/_surveyed.py`. The standard-library, numpy and scipy entries are chosen by hand in
`safety/allowlist.py`; the survey fails if honest models need one that is not there, so a human
decides each of those.

Rerun after upgrading scikit-learn, review the diff of `_surveyed.py`, commit it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from safety.pickles import PERMISSIVE, PickleScanner, ScanStats
from safety.streams import IterChunks, Reader

OUTPUT = Path(__file__).with_name("_surveyed.py")

# Modules whose classes are pure data holders of fitted models (trees, losses, links, distance
# metrics, kernels, cross-validation splitters): every class they define is surveyed, not only
# those the corpus happened to hit.
DATA_MODULES = (
    "sklearn._loss._loss",
    "sklearn._loss.link",
    "sklearn._loss.loss",
    "sklearn.gaussian_process.kernels",
    "sklearn.linear_model._sgd_fast",
    "sklearn.metrics._dist_metrics",
    "sklearn.metrics._scorer",
    "sklearn.model_selection._split",
    "sklearn.neighbors._ball_tree",
    "sklearn.neighbors._kd_tree",
    "sklearn.neural_network._stochastic_optimizers",
    "sklearn.tree._tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor",
    "sklearn.ensemble._hist_gradient_boosting.binning",
)


EXCLUDED = {
    # Distance metrics that call an arbitrary Python function: honest models using them name
    # their own function, which is not on the allow-list anyway.
    ("sklearn.metrics._dist_metrics", "PyFuncDistance32"),
    ("sklearn.metrics._dist_metrics", "PyFuncDistance64"),
}


def _scan_globals(data: bytes, *, joblib_format: bool) -> set[str]:
    stats = ScanStats()
    reader = Reader(IterChunks(iter([data])), max_line=1 << 24)
    PickleScanner(reader, policy=PERMISSIVE, joblib=joblib_format, stats=stats).run()
    return stats.globals


def _corpus() -> Iterator[tuple[str, Any]]:
    """Honest fitted models: every listed estimator that fits on toy data, and composites."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        StackingClassifier,
        VotingClassifier,
    )
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.feature_selection import RFE, SelectFromModel, SelectKBest, chi2
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        LabelBinarizer,
        LabelEncoder,
        OneHotEncoder,
        StandardScaler,
    )
    from sklearn.random_projection import SparseRandomProjection
    from sklearn.svm import SVC
    from sklearn.utils.discovery import all_estimators

    xc, yc = make_classification(n_samples=80, n_features=6, n_informative=3, random_state=0)
    xr, yr = make_regression(n_samples=80, n_features=6, random_state=0)
    for name, cls in all_estimators():
        for x, y in ((xc, yc), (xr, yr), (np.abs(xc), yc)):
            try:
                estimator = cls()
                try:
                    estimator.fit(x, y)
                except TypeError:
                    estimator.fit(x)
            except Exception:  # noqa: S112 - estimators that need arguments are covered below
                continue
            yield name, estimator
            break
    table = np.empty((80, 3), dtype=object)
    table[:, 0], table[:, 1] = xc[:, 0], xc[:, 1]
    table[:, 2] = np.where(xc[:, 2] > 0, "x", "y")
    rs = np.random.RandomState(0)
    yield "pipeline", make_pipeline(StandardScaler(), LogisticRegression()).fit(xc, yc)
    yield (
        "column_transformer",
        make_pipeline(
            ColumnTransformer(
                [("num", StandardScaler(), [0, 1]), ("cat", OneHotEncoder(), [2])],
                remainder="passthrough",
            ),
            LogisticRegression(),
        ).fit(table, yc),
    )
    yield "grid", GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(xc, yc)
    yield (
        "stacking",
        StackingClassifier(
            [("rf", RandomForestClassifier(n_estimators=3)), ("lr", LogisticRegression())]
        ).fit(xc, yc),
    )
    yield (
        "voting",
        VotingClassifier(
            [("rf", RandomForestClassifier(n_estimators=3, random_state=rs))], voting="soft"
        ).fit(xc, yc),
    )
    yield "hist_gb", HistGradientBoostingClassifier(max_iter=5).fit(xc, yc)
    yield "gb", GradientBoostingRegressor(n_estimators=3, random_state=rs).fit(xr, yr)
    yield "count", CountVectorizer().fit(["hello world", "foo bar"])
    yield "tfidf", TfidfVectorizer().fit(["hello world", "foo bar"])
    yield "dict", DictVectorizer().fit([{"a": 1, "b": 2}])
    yield "ovr", OneVsRestClassifier(SVC()).fit(xc, yc)
    yield "calibrated", CalibratedClassifierCV(LogisticRegression(), cv=2).fit(xc, yc)
    yield "isotonic", IsotonicRegression().fit(xc[:, 0], yc)
    yield "projection", SparseRandomProjection(n_components=3).fit(xc)
    yield "from_model", SelectFromModel(LogisticRegression()).fit(xc, yc)
    yield "rfe", RFE(LogisticRegression(), n_features_to_select=2).fit(xc, yc)
    yield "kbest", SelectKBest(chi2, k=2).fit(np.abs(xc), yc)
    yield "function", FunctionTransformer(np.log1p).fit(np.abs(xc))
    yield (
        "target",
        TransformedTargetRegressor(
            regressor=LinearRegression(), func=np.log1p, inverse_func=np.expm1
        ).fit(xr, np.abs(yr)),
    )
    yield "labels", LabelEncoder().fit(["a", "b"])
    yield "binarizer", LabelBinarizer().fit([1, 2, 3])
    yield "union", FeatureUnion([("sc", StandardScaler())]).fit(xc)
    yield "strings", LogisticRegression().fit(xc, np.where(yc > 0, "yes", "no"))


def _serialisations(model: Any) -> Iterator[tuple[bytes, bool]]:
    import joblib

    for protocol in (None, 2, 5):
        buffer = io.BytesIO()
        joblib.dump(model, buffer, protocol=protocol)
        yield buffer.getvalue(), True
    for protocol in (0, 2, 4, 5):
        yield pickle.dumps(model, protocol=protocol), False


def _classes_of(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    return {
        name
        for name, value in vars(module).items()
        if inspect.isclass(value) and getattr(value, "__module__", None) == module_name
    }


def survey() -> tuple[dict[str, set[str]], set[str]]:
    """sklearn (module → names) to allow, and the non-sklearn globals honest models used."""
    from sklearn.feature_selection import (
        chi2,
        f_classif,
        f_regression,
        mutual_info_classif,
        mutual_info_regression,
        r_regression,
    )
    from sklearn.metrics import get_scorer, get_scorer_names
    from sklearn.utils.discovery import all_estimators

    sklearn: dict[str, set[str]] = {}

    def add(module: str, name: str) -> None:
        if (module, name) not in EXCLUDED:
            sklearn.setdefault(module, set()).add(name)

    for _, cls in all_estimators():
        add(cls.__module__, cls.__qualname__)
    for module in DATA_MODULES:
        for name in _classes_of(module):
            add(module, name)
    functions: list[Any] = [
        chi2,
        f_classif,
        f_regression,
        r_regression,
        mutual_info_classif,
        mutual_info_regression,
    ]
    functions += [getattr(get_scorer(n), "_score_func", None) for n in get_scorer_names()]
    for function in functions:
        if function is not None:
            add(function.__module__, function.__qualname__)
    others: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, model in _corpus():
            for data, joblib_format in _serialisations(model):
                for qualified in _scan_globals(data, joblib_format=joblib_format):
                    if qualified.startswith("sklearn."):
                        module, _, name = qualified.rpartition(".")
                        add(module, name)
                    else:
                        others.add(qualified)
    return sklearn, others


def render(sklearn: dict[str, set[str]]) -> str:
    import sklearn as sk

    lines = [
        '"""Generated by `python -m safety.survey` from scikit-learn '
        f'{sk.__version__}: do not edit by hand."""',
        "",
        "SKLEARN: dict[str, frozenset[str]] = {",
    ]
    for module in sorted(sklearn):
        names = sorted(sklearn[module])
        lines.append(f'    "{module}": frozenset(')
        lines.append("        {")
        lines.extend(f'            "{name}",' for name in names)
        lines.append("        }")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safety.survey", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUTPUT.name}")
    args = parser.parse_args(argv)
    from safety.allowlist import is_allowed

    sklearn, others = survey()
    missing = sorted(q for q in others if not is_allowed(*q.rsplit(".", 1)))
    for qualified in missing:
        print(f"honest models need {qualified}: decide in safety/allowlist.py", file=sys.stderr)
    text = render(sklearn)
    if args.write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT} ({sum(len(v) for v in sklearn.values())} sklearn names)")
    else:
        print(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
