"""``schemas/workflow.schema.json`` is generated from the models and kept in sync."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from headrace.core.dsl import schema

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_committed_schema_matches_the_models() -> None:
    path = schema.SCHEMA_PATH
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert committed == schema.render(), (
        f"{schema.SCHEMA_PATH} is out of date with headrace/core/dsl/model.py — "
        f"regenerate it with `{schema.REGENERATE}` and commit the result"
    )


def test_schema_has_dialect_id_title_and_descriptions() -> None:
    doc = json.loads(schema.render())
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == schema.SCHEMA_ID
    assert doc["title"] and doc["description"]
    task = doc["$defs"]["TaskStep"]
    assert task["description"].startswith("Hand work to a domain service")
    assert "description" in task["properties"]["queue"]
    assert "as" in doc["$defs"]["ForeachStep"]["properties"]  # the alias, as authors write it


def test_schema_is_a_valid_json_schema_that_accepts_the_examples_and_refuses_junk() -> None:
    doc = schema.generate()
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    files = sorted(EXAMPLES.glob("*/*.yaml"))
    assert len(files) >= 3
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path}: {errors[0].message}"
    bad = {"type": "t", "version": 1, "steps": [{"name": "a", "kind": "task"}]}
    assert list(validator.iter_errors(bad))
