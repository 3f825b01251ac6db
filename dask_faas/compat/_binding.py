"""Lithops' rules binding the elements of ``map_iterdata`` to the parameters of the user's function.

Each element is one call: a tuple binds positionally, a dict by name, any other value (a list too)
binds to the first parameter; ``extra_args`` is appended (tuple) or merged (dict). Parameters named
in :data:`INJECTED` are filled in when the call runs, never taken from the data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

#: Parameters filled in at invocation time, never taken from the iterdata.
INJECTED = frozenset({"ibm_cos", "boto3_client", "storage", "id", "rabbitmq"})
#: The key of the positional arguments of a function without a signature (a builtin).
POSITIONAL = "*"


def signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The signature of ``fn``, or ``None`` for a callable without one (some builtins)."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def parameter_names(fn: Callable[..., Any]) -> list[str]:
    """The names of ``fn``'s parameters (none known for a callable without a signature)."""
    found = signature(fn)
    return [] if found is None else list(found.parameters)


def user_parameters(fn: Callable[..., Any]) -> list[str]:
    """The parameters that the data binds: all but the injected ones (:data:`POSITIONAL` if unknown)."""
    found = signature(fn)
    return [POSITIONAL] if found is None else [n for n in found.parameters if n not in INJECTED]


def as_list(value: Any) -> list[Any]:
    """``value`` as a list: the items of a list, tuple, range or set, else ``[value]``."""
    if isinstance(value, list | tuple | range | set):
        return list(value)
    return [value]


def bind(fn: Callable[..., Any], iterdata: Any, extra_args: Any) -> list[dict[str, Any]]:
    """Lithops' ``verify_args``: the keyword arguments of each call, one per element of ``iterdata``.

    A function without a signature gets its positional arguments under the :data:`POSITIONAL` key.

    Raises
    ------
    ValueError
        If a dict element misses one of the function's parameters.
    TypeError
        If an element does not fit the function's parameters or ``extra_args``.
    """
    data = list(iterdata) if isinstance(iterdata, list | range | set) else [iterdata]
    if extra_args:
        data = [with_extra_args(elem, extra_args) for elem in data]
    found = signature(fn)
    if found is None:
        return [e if isinstance(e, dict) else {POSITIONAL: e if isinstance(e, tuple) else (e,)} for e in data]
    user = found.replace(parameters=[p for n, p in found.parameters.items() if n not in INJECTED])
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in user.parameters.values())
    calls = []
    for elem in data:
        if isinstance(elem, dict):
            required = {
                n
                for n, p in user.parameters.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
            if not var_keyword and not required <= set(elem):
                raise ValueError(
                    f"Check the args names in the data. You provided these args: {list(elem)}, "
                    f"and the args must be: {list(user.parameters)}"
                )
            calls.append(dict_call(user, elem))
        else:
            calls.append(positional_call(user, elem))
    return calls


def dict_call(user: inspect.Signature, elem: dict[str, Any]) -> dict[str, Any]:
    """The call of a dict element: by name; the function's ``*args`` name takes a sequence of
    positional arguments (the named parameters before it then go positionally too), its
    ``**kwargs`` name a dict of more keywords."""
    params = user.parameters
    var_pos = next((n for n, p in params.items() if p.kind is p.VAR_POSITIONAL), None)
    var_kw = next((n for n, p in params.items() if p.kind is p.VAR_KEYWORD), None)
    call = dict(elem)
    if var_kw is not None and isinstance(call.get(var_kw), dict):
        call.update(call.pop(var_kw))
    if var_pos is None or var_pos not in call:
        return call
    star = tuple(call.pop(var_pos))
    leading = []
    for name, p in params.items():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or name not in call:
            break
        leading.append(call.pop(name))
    call[POSITIONAL] = (*leading, *star)
    return call


def positional_call(user: inspect.Signature, elem: Any) -> dict[str, Any]:
    """The call of a tuple (positional) or other element (the first parameter); a list that does
    not fit the first parameter alone binds positionally, as PyWren-IBM did.

    Raises
    ------
    TypeError
        If the element fits neither way.
    """
    try:
        bound = user.bind(*elem if isinstance(elem, tuple) else (elem,))
    except TypeError:
        if not isinstance(elem, list):
            raise
        bound = user.bind(*elem)
    if any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in user.parameters.values()):
        return {POSITIONAL: bound.args, **bound.kwargs}
    return dict(bound.arguments)


def with_extra_args(elem: Any, extra_args: Any) -> Any:
    """Lithops' ``format_data``: tuples are concatenated, dicts merged, single values extended.

    Raises
    ------
    TypeError
        If ``extra_args`` is not a tuple for a tuple element, or not a dict for a dict element.
    """
    if isinstance(elem, tuple):
        if not isinstance(extra_args, tuple):
            raise TypeError("extra_args must contain args in a tuple")
        return elem + extra_args
    if isinstance(elem, dict):
        if not isinstance(extra_args, dict):
            raise TypeError("extra_args must contain kwargs in a dictionary")
        return {**elem, **extra_args}
    return (elem, *extra_args)
