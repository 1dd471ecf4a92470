"""The wire contract of the editImageGpu activity.

The single source of truth is ``contracts/gpu-edit.schema.json`` at the repository root (shared with the
TypeScript side). This module loads it, validates requests and results against its ``$defs`` and implements
its task-queue naming rule.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

CONTRACT_ENV = "ATELIER_GPU_CONTRACT"


class ContractError(ValueError):
    """A payload does not match the contract. ``errors`` lists every violation."""

    def __init__(self, what: str, errors: list[str]):
        self.what = what
        self.errors = errors
        super().__init__(f"{what} does not match contracts/gpu-edit.schema.json: " + "; ".join(errors))


def contract_path() -> Path:
    """Where the schema file is: $ATELIER_GPU_CONTRACT, else <repo>/contracts/gpu-edit.schema.json."""
    env = os.environ.get(CONTRACT_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent  # gpu-workers/atelier_gpu
    for base in (here.parent.parent, here.parent, Path.cwd(), Path.cwd().parent):
        candidate = base / "contracts" / "gpu-edit.schema.json"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "contracts/gpu-edit.schema.json not found next to gpu-workers/; set ATELIER_GPU_CONTRACT to its path"
    )


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(contract_path(), encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    return schema


def activity_name() -> str:
    return load_schema()["activityName"]


def urls_update_name() -> str:
    """The row workflow's update a worker sends for the URLs of its request's staged: references."""
    return load_schema()["urlsUpdateName"]


def model_types() -> list[str]:
    return list(load_schema()["$defs"]["ModelType"]["enum"])


def error_types() -> dict[str, str]:
    return dict(load_schema().get("errorTypes", {}))


@lru_cache(maxsize=None)
def _validator(def_name: str) -> Draft202012Validator:
    schema = load_schema()
    if def_name not in schema["$defs"]:
        raise KeyError(f"contract has no $defs/{def_name}")
    # Validate against "#/$defs/<name>" with the whole document as the root so $refs resolve.
    sub = {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": f"#/$defs/{def_name}"}
    return Draft202012Validator(sub, format_checker=jsonschema.FormatChecker())


def _errors(def_name: str, payload: Any) -> list[str]:
    out = []
    for err in sorted(_validator(def_name).iter_errors(payload), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{where}: {err.message}")
    return out


def validate_request(payload: Any) -> dict[str, Any]:
    errs = _errors("GpuEditRequest", payload)
    if errs:
        raise ContractError("GpuEditRequest", errs)
    return payload


def validate_urls_request(payload: Any) -> dict[str, Any]:
    errs = _errors("GpuUrlsRequest", payload)
    if errs:
        raise ContractError("GpuUrlsRequest", errs)
    return payload


def validate_result(payload: Any) -> dict[str, Any]:
    errs = _errors("GpuEditResult", payload)
    if errs:
        raise ContractError("GpuEditResult", errs)
    return payload


def task_queue_for(model: str) -> str:
    """gpu- + model lower-cased, runs of chars outside [a-z0-9] -> '-', trimmed of '-', cut to 60 chars.

    Applied literally, in the order the rule states it: the cut to 60 applies to the model part (so the queue
    name is at most 64 characters) and comes after the trim, so a cut may leave a trailing '-'.
    """
    key = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:60]
    if not key:
        raise ValueError(f"model {model!r} gives an empty task-queue key")
    return f"gpu-{key}"
