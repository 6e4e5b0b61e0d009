"""`berth demo`: the whole story against a running Berth, one printed step at a time.

Train two versions of a small classifier, push both, promote the first, predict, promote the
second (a hot swap: the server is not restarted), split traffic 50/50 with sticky routing keys,
roll back, and predict against the pinned second version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from berth import render
from berth.client import Client

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]
"""One flower of each species: what every step predicts."""

STICKY_KEYS = ("alice", "bob", "carol")
SPLIT_REQUESTS = 200
STEPS = 8


@dataclass
class DemoResult:
    versions: tuple[int, int] = (0, 0)
    answered_by: dict[str, int] = field(default_factory=dict)
    sticky: dict[str, list[int]] = field(default_factory=dict)
    split: dict[int, int] = field(default_factory=dict)


def train() -> tuple[Any, Any, Any, dict[str, float], dict[str, float]]:
    """Two iris classifiers that differ in kind: a linear model, then a small forest."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    labels = np.asarray(iris.target_names)[iris.target]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, labels, test_size=0.3, random_state=0, stratify=labels
    )
    first = LogisticRegression(C=0.05, max_iter=500).fit(x_train, y_train)
    second = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0).fit(
        x_train, y_train
    )
    return (
        x_test[:5],
        first,
        second,
        {"accuracy": round(float(first.score(x_test, y_test)), 4)},
        {"accuracy": round(float(second.score(x_test, y_test)), 4)},
    )


def run(
    client: Client,
    say: Callable[[RenderableType], None],
    *,
    model: str = "demo-iris",
    alias: str = "production",
    wait: float = 60.0,
) -> DemoResult:
    """Tell the story against `client`; every step prints what it did and what came back."""
    result = DemoResult()
    step = 0

    def heading(text: str) -> None:
        nonlocal step
        step += 1
        say(Text(f"\n[{step}/{STEPS}] {text}", style="bold cyan"))

    heading("Train two versions of an iris classifier")
    sample, first, second, first_metrics, second_metrics = train()
    say(f"  first:  LogisticRegression      accuracy {first_metrics['accuracy']:.3f}")
    say(f"  second: RandomForestClassifier  accuracy {second_metrics['accuracy']:.3f}")

    heading(f"Push both to the registry as versions of '{model}'")
    v1 = client.push(
        first, model, sample=sample, metrics=first_metrics, description="logistic regression"
    )
    v2 = client.push(
        second, model, sample=sample, metrics=second_metrics, description="random forest"
    )
    result.versions = (v1.version, v2.version)
    for v in (v1, v2):
        say(f"  pushed {model} v{v.version}  sha256 {v.sha256[:16]}...  {v.description}")

    def predict(how: str, **target: Any) -> int:
        answer = client.predict(model, IRIS_ROWS, outputs=["predict", "predict_proba"], **target)
        via = f"@{answer.alias}" if answer.alias else f"pinned v{answer.version}"
        confidence = [round(max(p), 2) for p in answer.outputs.get("predict_proba", [])]
        say(
            f"  {how} ({via}) answered by v{answer.version}: {answer.predictions}"
            f"  confidence {confidence}"
        )
        result.answered_by[how] = answer.version
        return answer.version

    heading(f"Promote v{v1.version} to '{alias}' and wait until serving has it")
    out = client.promote(model, v1.version, alias=alias, reason="demo: first release", wait=wait)
    say(render.changed(out))
    predict("predict", alias=alias)

    heading(f"Promote v{v2.version}: a hot swap, no restart")
    out = client.promote(model, v2.version, alias=alias, reason="demo: the forest", wait=wait)
    say(render.changed(out))
    predict("predict after the swap", alias=alias)

    heading(f"Split '{alias}' 50/50 between v{v1.version} and v{v2.version}, sticky by key")
    out = client.split(
        model, {v1.version: 50, v2.version: 50}, alias=alias, reason="demo: A/B", wait=wait
    )
    say(render.changed(out))
    for key in STICKY_KEYS:
        seen = [
            client.predict(model, IRIS_ROWS[:1], alias=alias, routing_key=key).version
            for _ in range(5)
        ]
        result.sticky[key] = seen
        say(f"  key {key!r:8} 5 requests -> versions {seen}")
    counts = Counter(
        client.predict(model, IRIS_ROWS[:1], alias=alias, routing_key=f"user-{i}").version
        for i in range(SPLIT_REQUESTS)
    )
    result.split = dict(sorted(counts.items()))
    shares = ", ".join(
        f"v{v}: {n} ({100 * n / SPLIT_REQUESTS:.0f}%)" for v, n in result.split.items()
    )
    say(f"  {SPLIT_REQUESTS} requests with distinct keys -> {shares}")

    heading(f"Roll back '{alias}' (the split is undone, as recorded in its history)")
    out = client.rollback(model, alias=alias, reason="demo: end the A/B test", wait=wait)
    say(render.changed(out, "a rollback"))
    predict("predict after the rollback", alias=alias)

    heading(f"Predict against the pinned v{v2.version}, whatever the aliases say")
    predict("pinned predict", version=v2.version)

    heading("History of the alias, newest first")
    say(render.history(model, alias, client.history(model, alias)[:5]))
    return result
