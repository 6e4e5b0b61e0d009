"""The baseline: the common Flask example, under gunicorn with one sync worker.

Loads the joblib file and answers `model.predict([data['input']])`, as the tutorials write it.
The 64-row requests send `{"inputs": [...]}` instead (the one-row form cannot carry them).

    BENCH_MODEL_PATH=model.joblib gunicorn -w 1 -b 127.0.0.1:8000 bench.apps.flask_app:app
"""

from __future__ import annotations

import os
from typing import Any

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
model: Any = joblib.load(os.environ["BENCH_MODEL_PATH"])


@app.route("/predict", methods=["POST"])
def predict() -> Any:
    data = request.get_json()
    if "input" in data:
        prediction = model.predict([data["input"]])
    else:
        prediction = model.predict(data["inputs"])
    return jsonify({"prediction": prediction.tolist()})


@app.route("/healthz")
def healthz() -> str:
    return "ok"
