"""The `berth` CLI against a real `berth up` subprocess: publish, route, predict, operate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.cli.conftest import Instance, Result, berth
from tests.fixtures.servers import free_port

Cli = Callable[..., Result]

ROWS = [[0.5, -1.0, 2.0, 0.1], [-1.5, 0.3, 0.2, 1.0], [2.0, 2.0, -0.5, -0.3]]


def classifier(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 4))
    y = np.where(x @ np.array([1.0, -2.0, 0.5, 1.5]) + seed > 0, "yes", "no")
    return LogisticRegression().fit(x, y)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two joblib files of a classifier and a JSON sample, as a user's training run leaves them."""
    root = tmp_path_factory.mktemp("artifacts")
    paths = {"sample": root / "sample.json"}
    paths["sample"].write_text(json.dumps(ROWS))
    for seed in (1, 2):
        paths[f"v{seed}"] = root / f"model-{seed}.joblib"
        joblib.dump(classifier(seed), paths[f"v{seed}"])
    return paths


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: Result, *fragments: str) -> str:
    """A user mistake: exit 1, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def churn(instance: Instance, artifacts: dict[str, Path]) -> dict[str, Any]:
    """Model `churn` with two versions pushed through the console script, v1 in production."""
    env = instance.env
    first = berth(
        "push",
        str(artifacts["v1"]),
        "--model",
        "churn",
        "--sample",
        str(artifacts["sample"]),
        "--metric",
        "auc=0.91",
        "--tag",
        "team=growth",
        "--description",
        "first",
        "--json",
        env=env,
    )
    second = berth(
        "push",
        str(artifacts["v2"]),
        "--model",
        "churn",
        "--sample",
        str(artifacts["sample"]),
        env=env,
    )
    promoted = berth("promote", "churn", "1", "--wait", "--json", env=env)
    return {"v1": as_json(first), "v2_text": ok(second).stdout, "promoted": as_json(promoted)}


# --- publishing ---------------------------------------------------------------------------------


def test_push_records_signature_example_environment_and_digest(
    churn: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    v1 = churn["v1"]
    assert v1["model"] == "churn"
    assert v1["version"] == 1
    assert v1["sha256"] == hashlib.sha256(artifacts["v1"].read_bytes()).hexdigest()
    assert v1["signature"]["inputs"] == [{"name": f"f{i}", "dtype": "float64"} for i in range(4)]
    assert v1["signature"]["named"] is False
    assert v1["example"]["inputs"] == ROWS
    assert set(v1["example"]["outputs"]) == {"predict", "predict_proba"}
    assert v1["example"]["outputs"]["predict"] == classifier(1).predict(np.array(ROWS)).tolist()
    assert v1["metrics"] == {"auc": 0.91}
    assert v1["tags"] == {"team": "growth"}
    assert {"python", "scikit-learn", "numpy", "joblib"} <= set(v1["lineage"]["environment"])


def test_push_prints_the_version_and_its_digest(
    churn: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    digest = hashlib.sha256(artifacts["v2"].read_bytes()).hexdigest()
    assert "pushed churn version 2" in churn["v2_text"]
    assert digest in churn["v2_text"]


def test_models_versions_and_show(cli: Cli, churn: dict[str, Any]) -> None:
    models = as_json(cli("models", "--json"))
    assert "churn" in [m["name"] for m in models]
    assert "churn" in ok(cli("models")).stdout

    versions = as_json(cli("versions", "churn", "--json"))
    assert [v["version"] for v in versions] == [2, 1]
    table = ok(cli("versions", "churn")).stdout
    assert "auc=0.91" in table

    version = as_json(cli("show", "churn:1", "--json"))
    assert version["version"] == 1
    assert version["sha256"] in ok(cli("show", "churn:1")).stdout

    model = as_json(cli("show", "churn", "--json"))
    assert model["latest_version"] == 2
    assert "production" in [a["alias"] for a in model["aliases"]]

    alias = as_json(cli("show", "churn@production", "--json"))
    assert alias["alias"] == "production"
    assert "serves" in ok(cli("show", "churn@production")).stdout


# --- routing and predicting -----------------------------------------------------------------


def test_promote_wait_returns_once_serving_serves_it(churn: dict[str, Any]) -> None:
    promoted = churn["promoted"]
    assert promoted["variants"] == [{"version": 1, "weight": 100}]
    rollout = promoted["rollout"]
    assert rollout["converged"] is True
    assert rollout["revision"] == promoted["revision"]
    assert [r["revision"] for r in rollout["replicas"]] == [promoted["revision"]]


def test_predict_pinned_alias_and_default(cli: Cli, churn: dict[str, Any]) -> None:
    rows = json.dumps(ROWS)
    default = as_json(cli("predict", "churn", "--input", rows, "--json"))
    assert default["version"] == 1
    assert default["alias"] == "production"
    assert default["predictions"] == classifier(1).predict(np.array(ROWS)).tolist()

    by_alias = as_json(cli("predict", "churn", "--alias", "production", "--input", rows, "--json"))
    assert by_alias["version"] == 1

    pinned = as_json(
        cli(
            "predict",
            "churn",
            "--version",
            "2",
            "--input",
            rows,
            "--output",
            "predict_proba",
            "--json",
        )
    )
    assert pinned["version"] == 2
    assert pinned["predictions"] == classifier(2).predict(np.array(ROWS)).tolist()
    assert np.allclose(pinned["predict_proba"], classifier(2).predict_proba(np.array(ROWS)))

    text = ok(cli("predict", "churn", "--input", rows)).stdout
    assert "churn v1 via @production" in text


def test_predict_reads_the_input_from_a_file(
    cli: Cli, churn: dict[str, Any], tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"inputs": ROWS[:1]}))
    answer = as_json(cli("predict", "churn", "--version", "1", "--input", f"@{body}", "--json"))
    assert len(answer["predictions"]) == 1
    piped = as_json(
        cli("predict", "churn", "-v", "1", "--input", "@-", "--json", input=json.dumps(ROWS))
    )
    assert len(piped["predictions"]) == 3


def test_promote_history_rollback_and_split(cli: Cli, churn: dict[str, Any]) -> None:
    cli("promote", "staging-probe", "1")  # an unknown model: must not disturb the rest
    ok(cli("push", "--help"))
    ok(cli("promote", "churn", "2", "--alias", "staging", "--reason", "try v2", "--wait"))
    ok(cli("promote", "churn", "1", "--alias", "staging"))

    history = as_json(cli("history", "churn", "--alias", "staging", "--json"))
    assert [(r["revision"], r["variants"][0]["version"]) for r in history] == [(2, 1), (1, 2)]
    assert history[1]["reason"] == "try v2"
    assert "try v2" in ok(cli("history", "churn", "--alias", "staging")).stdout

    back = as_json(cli("rollback", "churn", "--alias", "staging", "--json"))
    assert back["variants"] == [{"version": 2, "weight": 100}]
    assert back["revision"] == 3
    to_first = as_json(cli("rollback", "churn", "--alias", "staging", "--to", "2", "--json"))
    assert to_first["variants"] == [{"version": 1, "weight": 100}]

    split = as_json(cli("split", "churn", "1=90", "2=10", "--alias", "staging", "--wait", "--json"))
    assert split["variants"] == [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]
    assert split["rollout"]["converged"] is True
    text = ok(cli("split", "churn", "1=50", "2=50", "--alias", "staging")).stdout
    assert "v1 50% · v2 50%" in text

    sticky = {
        as_json(
            cli(
                "predict",
                "churn",
                "-a",
                "staging",
                "--key",
                "alice",
                "--input",
                "[[0,0,0,0]]",
                "--json",
            )
        )["version"]
        for _ in range(3)
    }
    assert len(sticky) == 1


def test_split_with_a_shadow(cli: Cli, churn: dict[str, Any], artifacts: dict[str, Path]) -> None:
    ok(cli("push", str(artifacts["v1"]), "--model", "shadowed"))
    ok(cli("push", str(artifacts["v2"]), "--model", "shadowed"))
    ok(cli("push", str(artifacts["v1"]), "--model", "shadowed"))
    out = as_json(cli("split", "shadowed", "1=70", "2=30", "--shadow", "3", "--json"))
    assert out["shadow"] == [3]
    assert "shadow v3" in ok(cli("show", "shadowed@production")).stdout


# --- operations ---------------------------------------------------------------------------------


def test_gc_reports(cli: Cli, churn: dict[str, Any]) -> None:
    report = as_json(cli("gc", "--dry-run", "--json"))
    assert set(report) == {
        "deleted_blobs",
        "freed_bytes",
        "aborted_uploads",
        "kept_referenced",
        "kept_young",
    }
    assert report["deleted_blobs"] == 0
    assert "would delete 0 unreferenced artifacts" in ok(cli("gc", "--dry-run")).stdout


def test_doctor_resolves_and_checks_everything(cli: Cli, instance: Instance) -> None:
    report = as_json(cli("doctor", "--json"))
    assert report["healthy"] is True
    checks = {c["name"]: c for c in report["checks"]}
    for name in (
        "registry",
        "registry → database",
        "registry → artifact store",
        "serving",
        "token",
    ):
        assert checks[name]["ok"] is True, checks[name]
    assert checks["token"]["detail"] == "'admin' with role admin"
    assert checks["database (from here)"]["ok"] is True
    assert report["config"]["registry URL"].startswith(instance.url)
    assert str(instance.data_dir / "admin-token") in report["config"]["token"]
    assert "everything answers" in ok(cli("doctor")).stdout


def test_doctor_fails_when_the_registry_is_unreachable(cli: Cli) -> None:
    result = cli("doctor", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout
    assert "cannot reach the registry" in result.stdout


def test_tokens_create_list_use_and_revoke(cli: Cli, instance: Instance) -> None:
    created = as_json(cli("token", "create", "ci-reader", "--role", "reader", "--json"))
    secret = created["token"]
    assert secret.startswith("berth_")
    listed = as_json(cli("token", "list", "--json"))
    assert "ci-reader" in [t["name"] for t in listed]
    assert secret not in json.dumps(listed)

    assert ok(cli("models", "--token", secret)).exit_code == 0
    one_line_error(cli("promote", "churn", "1", "--token", secret), "needs publisher")

    revoked = as_json(cli("token", "revoke", str(created["id"]), "--json"))
    assert revoked["revoked_at"] is not None
    one_line_error(cli("models", "--token", secret), "revoked")


def test_token_straight_on_the_database(cli: Cli, instance: Instance) -> None:
    # BERTH_DATA_DIR points at the instance's SQLite file: how a first token is made.
    created = as_json(
        cli("token", "create", "bootstrap-ops", "--role", "admin", "--database", "--json")
    )
    whoami = as_json(cli("token", "list", "--json", "--token", created["token"]))
    assert "bootstrap-ops" in [t["name"] for t in whoami]
    listed = as_json(cli("token", "list", "--database", "--json"))
    assert "bootstrap-ops" in [t["name"] for t in listed]
    ok(cli("token", "revoke", str(created["id"]), "--database"))


def test_the_local_admin_token_is_picked_up_only_from_the_data_dir(
    cli: Cli, instance: Instance, tmp_path: Path
) -> None:
    assert ok(cli("models")).exit_code == 0  # BERTH_DATA_DIR has the admin-token
    one_line_error(cli("models", env={"BERTH_DATA_DIR": str(tmp_path)}), "needs a bearer token")
    assert ok(
        cli("models", env={"BERTH_DATA_DIR": str(tmp_path), "BERTH_TOKEN": instance.admin_token})
    )


# --- mistakes: one line, exit 1 -------------------------------------------------------------


def test_unknown_model(cli: Cli, churn: dict[str, Any]) -> None:
    one_line_error(cli("versions", "nope"), "model 'nope' does not exist")
    one_line_error(cli("show", "churn:99"), "model 'churn' has no version 99")
    one_line_error(cli("promote", "nope", "1"), "nope")


def test_bad_input(
    cli: Cli, churn: dict[str, Any], tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    one_line_error(cli("predict", "churn", "--input", "[[1, 2]]"), "expected 4")
    one_line_error(cli("predict", "churn", "--input", "[[1, 2"), "--input is not valid JSON")
    one_line_error(
        cli("predict", "churn", "--input", f"@{tmp_path / 'missing.json'}"), "cannot read"
    )
    one_line_error(
        cli("predict", "churn", "--version", "1", "--alias", "production", "--input", "[]"),
        "not both",
    )
    one_line_error(cli("split", "churn", "1:50"), "is not VERSION=WEIGHT")
    one_line_error(
        cli("push", str(tmp_path / "nothing.joblib"), "--model", "churn"), "no such file"
    )
    one_line_error(
        cli("push", str(artifacts["v1"]), "--model", "churn", "--metric", "auc=high"),
        "'high' is not a number",
    )
    one_line_error(
        cli("push", str(artifacts["v1"]), "--model", "Bad Name"),
        "model name 'Bad Name' is not valid",
    )
    one_line_error(cli("show", "churn:zero"), "positive number")
    one_line_error(cli("promote", "churn", "99"), "99")


def test_unreachable_registry(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli("models", "--url", url), f"cannot reach the registry at {url}")
    assert "refused" in line.lower()


def test_the_console_script_speaks_the_same(instance: Instance, churn: dict[str, Any]) -> None:
    listed = as_json(berth("versions", "churn", "--json", env=instance.env))
    assert [v["version"] for v in listed] == [2, 1]
    one_line_error(berth("versions", "nope", env=instance.env), "model 'nope' does not exist")
    unreachable = f"http://127.0.0.1:{free_port()}"
    one_line_error(
        berth("models", "--url", unreachable, env=instance.env), "cannot reach the registry"
    )
    usage = berth("split", env=instance.env)
    assert usage.exit_code == 2
    assert "Traceback" not in usage.stderr


def test_bad_configuration_and_an_unreachable_database(cli: Cli) -> None:
    one_line_error(
        cli("models", env={"BERTH_TIMEOUT_SECONDS": "soon"}),
        "invalid configuration ClientSettings timeout_seconds",
    )
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/berth"
    one_line_error(
        cli("db", "upgrade", env={"BERTH_DATABASE_URL": url}), "the database is unavailable"
    )


def test_token_bootstrap_writes_a_serving_token_and_no_second_admin(
    cli: Cli, instance: Instance, tmp_path: Path
) -> None:
    result = ok(cli("token", "bootstrap", "--dir", str(tmp_path)))
    assert "admin token not created (tokens exist already)" in result.stdout
    assert not (tmp_path / "admin-token").exists()
    secret = (tmp_path / "serving-token").read_text().strip()
    assert (tmp_path / "serving-token").stat().st_mode & 0o777 == 0o600
    me = httpx.get(
        f"{instance.url}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    ).json()
    assert me["role"] == "reader"
    # A second run keeps the token that still works.
    ok(cli("token", "bootstrap", "--dir", str(tmp_path)))
    assert (tmp_path / "serving-token").read_text().strip() == secret


def test_serve_refuses_an_unreadable_or_empty_token_file(cli: Cli, tmp_path: Path) -> None:
    # Checked before anything listens: a replica without its token could never follow routing.
    one_line_error(cli("serve", "--registry-token-file", str(tmp_path / "missing")), "cannot read")
    (tmp_path / "empty").write_text("\n")
    one_line_error(cli("serve", "--registry-token-file", str(tmp_path / "empty")), "is empty")
