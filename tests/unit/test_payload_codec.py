"""Payloads are decoded and outputs encoded by the fastest entry point that gives the same
result, and a model that overrides pydantic's own entry point keeps its override."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from agentflow.agent import PayloadDecoder, encode_output


class Plain(pydantic.BaseModel):
    n: int


class CustomIn(pydantic.BaseModel):
    n: int

    @classmethod
    def model_validate_json(cls, json_data: Any, **kwargs: Any) -> CustomIn:
        return super().model_validate_json(json_data.replace(b"1", b"2"), **kwargs)


class CustomOut(pydantic.BaseModel):
    n: int

    def model_dump_json(self, **kwargs: Any) -> str:
        return '{"custom":true}'


def test_a_plain_model_decodes_as_model_validate_json_does() -> None:
    decoder = PayloadDecoder(Plain)
    assert decoder.decode(b'{"n": 1}') == Plain.model_validate_json(b'{"n": 1}')
    with pytest.raises(pydantic.ValidationError):
        decoder.decode(b'{"n": "x"}')


def test_an_overridden_model_validate_json_is_still_called() -> None:
    assert PayloadDecoder(CustomIn).decode(b'{"n": 1}') == CustomIn(n=2)


def test_bytes_and_other_types_decode_as_before() -> None:
    assert PayloadDecoder(bytes).decode(b"\x00raw") == b"\x00raw"
    assert PayloadDecoder(dict).decode(b'{"a": 1}') == {"a": 1}
    assert PayloadDecoder(list[int]).decode(b"[1, 2]") == [1, 2]


def test_outputs_encode_like_model_dump_json_unless_it_is_overridden() -> None:
    for _ in range(2):  # the second time the class is known
        assert encode_output(Plain(n=3)) == Plain(n=3).model_dump_json().encode()
        assert encode_output(CustomOut(n=3)) == b'{"custom":true}'
    assert encode_output({"a": 1}) == b'{"a":1}'
    assert encode_output(b"raw") == b"raw"
