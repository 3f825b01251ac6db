"""The OpenWhisk emulator's actions: the controller's entity (validation, JSON shape) and its errors.

See :mod:`dask_faas.testing.openwhisk_emulator`; the texts are OpenWhisk's (``core/controller`` and
``common/scala`` of apache/openwhisk).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NOT_FOUND", "Action", "HttpError", "malformed", "ms", "parse_action"]

#: OpenWhisk's 404 text (org.apache.openwhisk.http.Messages).
NOT_FOUND = "The requested resource does not exist."


def ms(t: float) -> int:
    """``time.time()`` seconds as OpenWhisk's epoch milliseconds."""
    return int(t * 1000)


class HttpError(Exception):
    """An answer ``{"error": message, "code": <transaction id>}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def malformed(reason: str) -> HttpError:
    """A 400 for a request body OpenWhisk cannot accept."""
    return HttpError(400, f"The request content was malformed:\n{reason}")


# -- actions --------------------------------------------------------------------------------------


@dataclass
class Action:
    """A Docker action as the controller stores it."""

    namespace: str
    name: str
    exec: dict[str, Any]
    limits: dict[str, int]
    parameters: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    revision: int = 1
    updated: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return f"0.0.{self.revision}"

    def annotation(self, key: str, default: Any) -> Any:
        return next((a.get("value") for a in self.annotations if a.get("key") == key), default)

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "exec": self.exec,
            "limits": self.limits,
            "parameters": self.parameters,
            "annotations": self.annotations,
            "publish": False,
            "updated": ms(self.updated),
        }

    def split(self, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(init environment, arguments)``: the defaults merged with ``payload``, partitioned."""
        merged = {p["key"]: p.get("value") for p in self.parameters} | payload
        init_keys = {p["key"] for p in self.parameters if p.get("init")}
        env = {k: v for k, v in merged.items() if k in init_keys}
        return env, {k: v for k, v in merged.items() if k not in init_keys}


def parse_action(ns: str, name: str, body: Any, old: Action | None, maxima: tuple[int, int]) -> Action:
    """Validate a PUT body as OpenWhisk does; an update keeps what the body leaves out."""
    if not isinstance(body, dict):
        raise malformed("the action must be a JSON object")
    exec_ = body.get("exec", old.exec if old else None)
    if not isinstance(exec_, dict):
        raise malformed("'exec' is required to create an action")
    if exec_.get("kind") != "blackbox":
        raise malformed(
            f"The specified runtime '{exec_.get('kind')}' is not supported by this platform. "
            "Valid values are: 'blackbox'."
        )
    if not isinstance(exec_.get("image"), str) or not exec_["image"]:
        raise malformed("image must be a string defined in 'exec' for 'blackbox' actions")
    exec_ = {"kind": "blackbox", "image": exec_["image"], "binary": bool(exec_.get("code"))} | (
        {"code": exec_["code"]} if exec_.get("code") else {}
    )
    limits = {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1} | (old.limits if old else {})
    given = body.get("limits") or {}
    if not isinstance(given, dict):
        raise malformed("'limits' must be an object")
    limits |= {k: given[k] for k in ("timeout", "memory", "logs", "concurrency") if k in given}
    max_timeout, max_memory = maxima
    for key, low, high, unit in (
        ("timeout", 100, max_timeout, "milliseconds"),
        ("memory", 128, max_memory, "MB"),
    ):
        value, label = limits[key], "duration" if key == "timeout" else "memory"
        if not isinstance(value, int) or isinstance(value, bool):
            raise malformed(f"'{key}' must be an integer")
        if value > high:
            text = f"{label} {value} {unit} exceeds allowed threshold of {high} {unit}"
            raise malformed(
                text
                if key == "timeout"
                else f"{label} size {value} MB exceeds allowed threshold of {high} MB"
            )
        if value < low:
            text = f"{label} {value} {unit} below allowed threshold of {low} {unit}"
            raise malformed(
                text if key == "timeout" else f"{label} size {value} MB below allowed threshold of {low} MB"
            )
    if limits["concurrency"] != 1:
        raise malformed(f"concurrency {limits['concurrency']} exceeds allowed threshold of 1")
    lists = {}
    for key in ("parameters", "annotations"):
        items = body.get(key, getattr(old, key) if old else [])
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("key"), str) for i in items
        ):
            raise malformed(f'\'{key}\' must be a list of {{"key": ..., "value": ...}} objects')
        lists[key] = [
            {"key": i["key"], "value": i.get("value")} | ({"init": True} if i.get("init") else {})
            for i in items
        ]
    if not any(a["key"] == "exec" for a in lists["annotations"]):
        lists["annotations"].append({"key": "exec", "value": "blackbox"})
    revision = old.revision + 1 if old else 1
    return Action(ns, name, exec_, limits, lists["parameters"], lists["annotations"], revision)
