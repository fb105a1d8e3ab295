"""The JSON Schema of workflow definitions, generated from the pydantic models.

Editors (VS Code's YAML extension, JetBrains) read ``schemas/workflow.schema.json``
to complete and check definitions as they are typed. The file is generated,
never edited: regenerate it with ``headrace schema --write`` (or
``python -m headrace.core.dsl.schema``); a test fails while the committed file
differs from what the models produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from headrace.core.dsl.model import Definition

SCHEMA_ID = "urn:headrace:schema:workflow-definition"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "workflow.schema.json"
REGENERATE = "headrace schema --write"


def generate() -> dict[str, Any]:
    """The schema as a mapping: ``$schema``/``$id`` first, then pydantic's output."""
    body = Definition.model_json_schema(by_alias=True, mode="validation")
    body["title"] = "headrace workflow definition"
    return {"$schema": DIALECT, "$id": SCHEMA_ID, **body}


def render() -> str:
    """The schema file's exact text (stable key order, trailing newline)."""
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def write(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH))
