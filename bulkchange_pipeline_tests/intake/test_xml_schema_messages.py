"""What an XML request's sender reads when it does not match the request XSD: our namespace is left
out of libxml2's messages for brevity, except where that would make the message say "element X
is not expected, expected X": an element in no namespace (unprefixed children under a prefixed
root, the usual slip) is said to be in none."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.intake.parsing import IntakeError
from bulkchange_pipeline.intake.xml_request import REQUEST_NAMESPACE, xml_request_body


def refusal(document: str) -> str:
    with pytest.raises(IntakeError) as raised:
        xml_request_body(document.encode())
    return str(raised.value)


def test_unprefixed_children_under_a_prefixed_root_are_said_to_be_in_no_namespace() -> None:
    message = refusal(
        f'<b:bulkChangeRequest xmlns:b="{REQUEST_NAMESPACE}"><serviceProviderId>1</serviceProviderId>'
        "</b:bulkChangeRequest>"
    )
    assert f"Element 'serviceProviderId' (in no namespace; a request's elements are in {REQUEST_NAMESPACE})" in message
    assert "Expected is one of ( serviceProviderId" in message  # ours, short, after the explanation
    assert "{" not in message


def test_an_unexpected_element_of_our_namespace_reads_without_it() -> None:
    message = refusal(f'<bulkChangeRequest xmlns="{REQUEST_NAMESPACE}"><nonsense>1</nonsense></bulkChangeRequest>')
    assert "Element 'nonsense': This element is not expected" in message
    assert "no namespace" not in message and REQUEST_NAMESPACE not in message
