"""The ``rabbitmq`` argument (Lithops' ``examples/rabbitmq_arg.py``) is refused before any invocation.

No RabbitMQ broker can be started here, so dask-faas does not inject a ``pika`` connection: a
function with a ``rabbitmq`` parameter is refused by ``call_async``, ``map`` and ``map_reduce``
with a ``NotImplementedError`` naming the argument, and nothing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dask_faas.compat as lithops


def make_writer(marker: Path) -> Any:
    def my_function_writer(queue_name: str, message: str, rabbitmq: Any) -> None:
        marker.write_text("ran")  # must never happen

    return my_function_writer


#: The refusal names the function, the argument and why.
REFUSAL = r"my_function_writer' takes a 'rabbitmq' argument .*RabbitMQ broker"


def test_rabbitmq_argument_refused_before_any_invocation(executor: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    writer = make_writer(marker)
    fexec = lithops.FunctionExecutor(executor=executor)
    with pytest.raises(NotImplementedError, match=REFUSAL):
        fexec.call_async(writer, ("my_queue", "This is a rabbitmq test"))
    with pytest.raises(NotImplementedError, match=REFUSAL):
        fexec.map(writer, [("my_queue", "m")])
    with pytest.raises(NotImplementedError, match=REFUSAL):
        fexec.map_reduce(writer, [("my_queue", "m")], lambda results: results)
    assert fexec.futures == []
    assert not marker.exists()
    assert len(executor.invocations()) == 0  # nothing was invoked
