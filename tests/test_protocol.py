"""Payloads and responses are versioned and signed; nothing unsigned is ever unpickled."""

from __future__ import annotations

import pickle

import pytest

from dask_faas import IntegrityError, ProtocolError
from dask_faas.protocol import VERSION, Invocation, Ref, Response, new_key, seal, unseal


def invocation() -> Invocation:
    return Invocation("job", "7", 1, Ref("p/fn/abc", 10), b"args", {"backend": "local"}, "p", 100)


def test_sealed_messages_round_trip():
    key = new_key()
    assert unseal(seal(invocation(), key), key) == invocation()
    response = Response("7", 1, True, Ref("p/out/7.1", 3), {"pid": 1})
    assert unseal(seal(response, key), key) == response


def test_a_message_signed_with_another_key_is_refused():
    with pytest.raises(IntegrityError, match="invalid signature"):
        unseal(seal(invocation(), new_key()), new_key())


def test_a_changed_body_is_refused_before_it_is_unpickled():
    key = new_key()
    sealed = bytearray(seal(invocation(), key))
    sealed[-5:] = pickle.dumps(0)[-5:]
    with pytest.raises(IntegrityError):
        unseal(bytes(sealed), key)


def test_garbage_and_other_versions_are_refused_with_their_cause():
    key = new_key()
    with pytest.raises(IntegrityError, match="magic"):
        unseal(b"GET / HTTP/1.1", key)
    sealed = bytearray(seal(invocation(), key))
    sealed[5] = VERSION + 1
    with pytest.raises(ProtocolError, match=f"version {VERSION + 1}"):
        unseal(bytes(sealed), key)


def test_the_capture_cap_and_the_captured_output_travel_in_the_messages():
    key = new_key()
    inv = Invocation(
        "job", "7", 1, Ref("p/fn/abc", 10), b"args", {"backend": "local"}, "p", 100, log_bytes=4096
    )
    assert unseal(seal(inv, key), key).log_bytes == 4096 and invocation().log_bytes == 0
    response = Response("7", 1, True, b"x", {"request_id": "r-1", "running_s": 0.5}, logs="printed\n")
    back = unseal(seal(response, key), key)
    assert back.logs == "printed\n" and back.stats == {"request_id": "r-1", "running_s": 0.5}
    assert Response("7", 1, True, b"x").logs == ""


def test_a_message_of_protocol_3_is_refused_naming_both_versions():
    key = new_key()
    sealed = bytearray(seal(invocation(), key))
    sealed[5] = 3  # before records and logs rode in the messages
    with pytest.raises(ProtocolError, match=f"version 3, this side speaks {VERSION}"):
        unseal(bytes(sealed), key)
