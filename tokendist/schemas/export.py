"""JSON Schema for upstream producers, one file per (event type, version)."""

from __future__ import annotations

import json
from pathlib import Path

from tokendist.schemas.events import SUPPORTED


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, versions in SUPPORTED.items():
        for version, model in versions.items():
            schema = model.model_json_schema(mode="serialization")
            schema["$id"] = f"urn:tokendist:{event_type}:v{version}"
            path = directory / f"{event_type}.v{version}.schema.json"
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(path)
    return written
