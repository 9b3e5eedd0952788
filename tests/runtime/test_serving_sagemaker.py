"""SageMaker's container contract over real HTTP: GET /ping, POST /invocations (records by input
name, rows, OIP v2, CSV with or without a header) answering {"predictions": [...]} named by
class, and `python -m specml.runtime serve` started the
way a SageMaker endpoint starts the image (model in $SM_MODEL_DIR, port 8080 or
$SAGEMAKER_BIND_TO_PORT). Also: `python -m specml.runtime evaluate` exits 0 on a failed gate so
the SageMaker pipeline's Condition/Fail steps decide (opt-in --fail-on-gate exits 3)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.server import wait_until_ready
from specml.runtime.serving.testing import CHURN_FEATURES, http_request, write_model_dir

ort = pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]
ROWS = [[0.5, -1.0, 2.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, None, 4.0, -2.0, 0.25]]
NAMES = [ref.split(":")[1] for ref in CHURN_FEATURES]
CLASSES = ["class_0", "class_1", "class_2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "model", n_classes=3)


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> np.ndarray:
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.array([[np.nan if v is None else v for v in row] for row in ROWS], np.float32)
    return session.run(["output"], {n: x[:, j : j + 1] for j, n in enumerate(NAMES)})[0]


def _probabilities(answer: dict) -> np.ndarray:
    """The answer's rows back as a matrix (checking each row is named by class)."""
    rows = answer["predictions"]
    for row in rows:
        assert list(row["probabilities"]) == CLASSES
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    return np.array([list(row["probabilities"].values()) for row in rows])


@pytest.fixture(scope="module")
def server(model_dir: Path):
    with running_server(ServerConfig(model_dir, port=0)) as url:
        yield url


def _invoke(
    url: str, body: str | bytes, content_type: str = "application/json"
) -> tuple[int, dict]:
    status, headers, raw = http_request(
        url, "POST", "/invocations", body, {"Content-Type": content_type}
    )
    return status, {**json.loads(raw), "_headers": headers}


def test_ping_and_execution_parameters(server: str) -> None:
    status, _, body = http_request(server, "GET", "/ping")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, _, body = http_request(server, "GET", "/execution-parameters")
    assert status == 200 and json.loads(body)["BatchStrategy"] == "MULTI_RECORD"
    assert http_request(server, "POST", "/ping")[0] == 405


def test_invocations_accepts_every_body_form(server: str, expected: np.ndarray) -> None:
    flat = [np.nan if v is None else v for row in ROWS for v in row]
    oip = {
        "id": "r1",
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [3, 5],
                "data": [v if v == v else "NaN" for v in flat],
            }
        ],
    }
    oip_text = json.dumps(oip).replace('"NaN"', "NaN")
    csv = "\n".join(",".join("" if v is None else str(v) for v in row) for row in ROWS) + "\n"
    order = [4, 2, 0, 1, 3]  # a header names the columns: any order
    header = ",".join(NAMES[j] for j in order) + "\n"
    csv_named = header + "".join(
        ",".join("" if row[j] is None else str(row[j]) for j in order) + "\n" for row in ROWS
    )
    records = [dict(zip(NAMES, row, strict=True)) for row in ROWS]
    named_oip = {
        "inputs": [
            {"name": n, "datatype": "FP64", "shape": [3, 1], "data": [row[j] for row in ROWS]}
            for j, n in enumerate(NAMES)
        ]
    }
    bodies = [
        (json.dumps({"instances": records}), "application/json"),
        (json.dumps({"instances": ROWS}), "application/json"),
        (json.dumps({"inputs": ROWS}), "application/json; charset=utf-8"),
        (oip_text, "application/json"),
        (json.dumps(named_oip), "application/json"),
        (csv, "text/csv"),
        (csv_named, "text/csv"),
    ]
    for body, content_type in bodies:
        status, answer = _invoke(server, body, content_type)
        assert status == 200, (body, answer)
        np.testing.assert_allclose(_probabilities(answer), expected, rtol=1e-6)
        assert answer["_headers"]["x-specml-model-version"] == "1"
    status, answer = _invoke(server, json.dumps({"instances": ROWS[0]}))  # one flat row
    assert status == 200 and np.allclose(_probabilities(answer), expected[:1], rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "text"),
    [
        ('{"instances": [[1, 2, 3]]}', "application/json", 400, "list of 5 values"),
        ('{"instances": [[1, 2, 3, "x", 5]]}', "application/json", 400, "'logins_7d' must be"),
        ('{"instances": [[1, 2, 3, true, 5]]}', "application/json", 400, "number or null"),
        ('{"instances": [{"monthly_spend": 1}]}', "application/json", 400, "lacks input"),
        ('{"instances": [{"nope": 1}]}', "application/json", 400, "unknown input 'nope'"),
        ("monthly_spend,x\n1,2\n", "text/csv", 400, "unknown column 'x'"),
        ('{"instances": []}', "application/json", 400, "non-empty"),
        ('{"rows": [[1, 2, 3, 4, 5]]}', "application/json", 400, '"instances"'),
        ("[1, 2]", "application/json", 400, "JSON object"),
        ("{bad json", "application/json", 400, "malformed JSON"),
        ("1,2,x,4,5\n", "text/csv", 400, "'tenure_months' must be a number"),
        ("1,2,3\n", "text/csv", 400, "CSV line 1 has 3 values"),
        ("1,2,3,4,5", "application/x-npy", 415, "not supported"),
        ('{"instances": [[1e39, 2, 3, 4, 5]]}', "application/json", 400, "too large"),
    ],
)
def test_invocations_refuses_bad_bodies_with_4xx(
    server: str, body: str, content_type: str, status: int, text: str
) -> None:
    got, answer = _invoke(server, body, content_type)
    assert got == status and text in answer["error"], answer


def test_invocations_of_a_string_model_by_records_and_csv(tmp_path: Path) -> None:
    """Records by input name and CSV with a header carry strings; a binary classifier answers
    its label and both classes' probabilities (the positive one is the model's score)."""
    features = ("t:plan", "t:spend")
    model = write_model_dir(
        tmp_path / "m", features=features, categorical={"plan": ("basic", "pro")}
    )
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "plan": np.array([["pro"], [""], ["gold"]], dtype=object),
        "spend": np.array([[10.0], [np.nan], [3.5]], np.float32),
    }
    score, labels = session.run(["output", "label"], feeds)
    records = [
        {"plan": "pro", "spend": 10},
        {"plan": None, "spend": None},
        {"plan": "gold", "spend": 3.5},
    ]
    csv = 'spend,plan\n10,pro\n,\n3.5,"gold"\n'
    with running_server(ServerConfig(model, port=0)) as url:
        for body, content_type in [
            (json.dumps({"instances": records}), "application/json"),
            (csv, "text/csv"),
            (json.dumps({"instances": [["pro", 10], [None, None], ["gold", 3.5]]}), ""),
        ]:
            status, answer = _invoke(url, body, content_type)
            assert status == 200, answer
            rows = answer["predictions"]
            assert [r["label"] for r in rows] == labels.ravel().tolist()
            yes = [r["probabilities"]["yes"] for r in rows]
            np.testing.assert_allclose(yes, score.ravel(), rtol=1e-6)
            assert all(
                abs(r["probabilities"]["no"] + r["probabilities"]["yes"] - 1) < 1e-6 for r in rows
            )
        status, answer = _invoke(url, json.dumps({"instances": [{"plan": 5, "spend": 1}]}))
        assert status == 400 and "'plan' must be a string" in answer["error"]
        status, answer = _invoke(url, "pro,x\n", "text/csv")  # no header: input order
        assert status == 400 and "'spend' must be a number" in answer["error"]


def test_a_regression_model_answers_values(tmp_path: Path) -> None:
    model = write_model_dir(tmp_path / "r", n_classes=1, model_name="price")
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.array(ROWS[:2], np.float32)
    expected = session.run(["output"], {n: x[:, j : j + 1] for j, n in enumerate(NAMES)})[0]
    with running_server(ServerConfig(model, port=0)) as url:
        meta = json.loads(http_request(url, "GET", "/v2/models/price")[2])
        status, answer = _invoke(url, json.dumps({"instances": ROWS[:2]}))
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}]
    assert status == 200
    values = [row["value"] for row in answer["predictions"]]
    np.testing.assert_allclose(values, expected.ravel(), rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runtime_serve_starts_like_a_sagemaker_container(
    model_dir: Path, expected: np.ndarray
) -> None:
    """~3 s: `python -m specml.runtime serve` with no arguments, as SageMaker's `docker run IMAGE
    serve` runs it: model from $SM_MODEL_DIR, port from $SAGEMAKER_BIND_TO_PORT, batching from
    the SPECML_* env the SageMaker target sets; SIGTERM drains and exits 0."""
    port = _free_port()
    env = {
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SPECML_MAX_BATCH_SIZE": "16",
        "SPECML_MAX_DELAY_MS": "1",
        "FEAST_USAGE": "False",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "specml.runtime", "serve"],
        env={**__import__("os").environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert f"on http://0.0.0.0:{port}" in line, line  # every interface, SageMaker's port
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, timeout_s=60, alive=lambda: child.poll() is None)
        assert http_request(url, "GET", "/ping")[0] == 200
        status, answer = _invoke(url, json.dumps({"instances": ROWS}))
        assert status == 200 and np.allclose(_probabilities(answer), expected, rtol=1e-6)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
        assert "batching on (max 16 rows, 1.0 ms)" in child.stderr.read()  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()


def test_runtime_serve_without_a_model_exits_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specml.runtime", "serve", "--port", "0"],
        env={**__import__("os").environ, "SM_MODEL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and f"no model.onnx in {tmp_path}" in done.stderr


def _failed_gate(monkeypatch: pytest.MonkeyPatch, plan_file: Path) -> list[str]:
    import specml.runtime.__main__ as entry
    from specml.runtime.contract import StepResult

    gate = {
        "gate": "roc_auc >= 0.9",
        "metric": "roc_auc",
        "value": 0.8,
        "margin": -0.1,
        "passed": False,
    }

    def run_step(kind, plan_text, ctx, inputs, outputs):  # noqa: ANN001, ANN202
        assert kind == "evaluate" and outputs == {"eval_metrics": Path("/r/eval_metrics.json")}
        return StepResult(values={"gate_passed": False, "gates": [gate]}, metrics={"roc_auc": 0.8})

    monkeypatch.setattr(entry, "run_step", run_step)
    return [
        "evaluate",
        "--plan",
        str(plan_file),
        "--workdir",
        "/w",
        "--data-dir",
        "/d",
        "--output",
        "eval_metrics=/r/eval_metrics.json",
    ]


def test_evaluate_exits_0_on_a_failed_gate_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    import specml.runtime.__main__ as entry

    (tmp_path / "plan.json").write_text("{}")
    argv = _failed_gate(monkeypatch, tmp_path / "plan.json")
    assert entry.main(argv) == 0  # the pipeline's condition step decides, the job succeeds
    out = capsys.readouterr()
    assert json.loads(out.out)["values"]["gate_passed"] is False
    assert "gate failed: roc_auc >= 0.9: roc_auc=0.8000 misses by 0.1000" in out.err
    assert entry.main([*argv, "--fail-on-gate"]) == 3  # opt-in: a failing gate fails the process


def test_sagemaker_pipeline_evaluate_step_does_not_fail_on_the_gate() -> None:
    """The SageMaker pipeline runs evaluate without --fail-on-gate: its job succeeds, the report
    reaches the Condition step (JsonGet on gate_passed / metrics), whose else-branch is Fail."""
    pytest.importorskip("pulumi_aws")
    from specml.compiler.api import plan_file
    from specml.targets.sagemaker.pipeline_definition import build_definition, placeholder_refs

    plan = plan_file(str(REPO / "specs" / "churn.yaml"))
    definition = build_definition(plan, placeholder_refs(plan))
    steps = {s["Name"]: s for s in definition["Steps"]}
    evaluate = next(
        s
        for s in steps.values()
        if "evaluate"
        in json.dumps(
            s.get("Arguments", {}).get("AppSpecification", {}).get("ContainerEntrypoint", [])
        )
    )
    app = evaluate["Arguments"]["AppSpecification"]
    assert "--fail-on-gate" not in json.dumps(app)
    condition = next(s for s in steps.values() if s["Type"] == "Condition")
    assert [s["Type"] for s in condition["Arguments"]["ElseSteps"]] == ["Fail"]
    assert evaluate["Name"] in json.dumps(condition["Arguments"]["Conditions"])


def test_prediction_rows_name_the_declared_positive_class() -> None:
    from specml.runtime.serving.model import ServingManifest
    from specml.runtime.serving.sagemaker import prediction_rows

    manifest = ServingManifest(
        model_name="m", model_version="1", task="binary_classification", num_classes=2,
        output_name="output", features=(), inputs=(), entity_join_keys=(), feature_repo=None,
        classes=("No", "Yes"), positive_class="No",
    )  # fmt: skip
    results = {
        "output": np.array([[0.75], [0.25]], np.float32),  # P(No), the declared positive
        "label": np.array([["No"], ["Yes"]], dtype=object),
    }
    assert prediction_rows(manifest, results) == [
        {"label": "No", "probabilities": {"Yes": 0.25, "No": 0.75}},
        {"label": "Yes", "probabilities": {"Yes": 0.75, "No": 0.25}},
    ]
    assert manifest.output_parameters() == {"classes": ["No", "Yes"], "positive_class": "No"}
