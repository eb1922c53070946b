"""ui/forms.py: an API refusal lands next to the form field it concerns."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from corral.engine.ui.forms import invalid, refused, same
from corral.errors import Conflict, CorralError, HostError, InvalidInput, Unavailable


class _Rule(BaseModel):
    port_min: int | None = None
    port_max: int | None = None
    cidr: str = ""
    tags: list[int] = []

    @model_validator(mode="after")
    def _order(self) -> _Rule:
        if self.port_min is not None and self.port_max is not None \
                and self.port_min > self.port_max:
            raise ValueError("port_max is below port_min")
        return self


FIELDS = {**same(("cidr", "tags")), "port_min": "port", "port_max": "port"}


def _errors(**body: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Rule.model_validate(body)
    return caught.value


def test_a_field_error_goes_to_its_form_field_sentence_cased() -> None:
    errors = invalid(_errors(port_min="x"), FIELDS, "form")
    assert list(errors) == ["port"]
    assert errors["port"][0].isupper()


def test_a_list_item_error_goes_to_its_field() -> None:
    assert list(invalid(_errors(tags=[1, "x"]), FIELDS, "form")) == ["tags"]


def test_a_whole_request_error_goes_to_the_field_its_message_names_first() -> None:
    errors = invalid(_errors(port_min=9, port_max=1), FIELDS, "form")
    assert errors == {"port": "Port_max is below port_min"}
    assert list(invalid(_errors(port_min=9, port_max=1), same(("cidr",)), "form")) == ["form"]


def test_a_refusal_goes_to_its_field_or_the_quota_it_counts_else_the_fallback() -> None:
    assert refused(InvalidInput("bad cidr", field="cidr"), FIELDS, "form") == {
        "cidr": "Bad cidr"}
    over = Conflict("quota disk exceeded", quota="disk")
    assert refused(over, {"size": "size", "disk": "size"}, "name") == {
        "size": "Quota disk exceeded"}
    assert refused(Conflict("taken"), FIELDS, "form") == {"form": "Taken"}


@pytest.mark.parametrize("kind", [HostError, Unavailable])  # 502, 503
def test_a_host_that_failed_is_said_on_the_form(kind: type[CorralError]) -> None:
    assert refused(kind("host h1 did not answer"), FIELDS, "form") == {
        "form": "Host h1 did not answer"}


def test_any_other_engine_failure_is_the_error_page() -> None:
    with pytest.raises(CorralError):
        refused(CorralError("boom"), FIELDS, "form")
