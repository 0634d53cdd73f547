"""The AuthZEN decision point through `decern`'s AuthZEN 1.0 Access Evaluation client (PyPI,
written for another PDP): the enforcement point authenticates with its own key as a bearer
token, and the agent's credential travels as `subject.properties.token`."""

from __future__ import annotations

import httpx
import pytest
from decern import Client, DecernError

from custos import Custos


def agent_subject(nhi_id: str, token: str) -> dict:
    return {"type": "agent", "id": nhi_id, "properties": {"token": token}}


def test_decern_client_asks_custos(custos: Custos):
    gateway = custos.nhi("authzen-gateway", ["custos:evaluate"])
    agent = custos.nhi("authzen-agent", ["crm:read:customers/*"])
    pdp = Client(custos.base_url, token=gateway.secret)

    allowed = pdp.evaluate(
        subject=agent_subject(agent.id, agent.secret),
        action="read",
        resource={"type": "crm", "id": "customers/42"},
    )
    assert allowed.allowed is True
    assert allowed.context["reason"] == "allowed"
    assert allowed.context["nhi"] == agent.id

    refused = pdp.evaluate(
        subject=agent_subject(agent.id, agent.secret),
        action={"name": "delete"},
        resource={"type": "crm", "id": "customers/42"},
        context={"ip": "10.0.0.7"},
    )
    assert refused.allowed is False
    assert refused.context["reason"] == "out_of_scope"

    # Revoked between two calls: the very next evaluation is refused.
    credentials = custos.admin.get("/v1/credentials", params={"nhi_id": agent.id}).json()["items"]
    custos.admin.post(f"/v1/credentials/{credentials[0]['id']}/revoke").raise_for_status()
    after = pdp.evaluate(
        subject=agent_subject(agent.id, agent.secret),
        action="read",
        resource={"type": "crm", "id": "customers/42"},
    )
    assert (after.allowed, after.context["reason"]) == (False, "revoked")


def test_decern_client_sees_http_errors(custos: Custos):
    agent = custos.nhi("authzen-outsider", ["crm:read"])
    # An agent key is not an enforcement point's: 403, which the client raises.
    with pytest.raises(DecernError) as refused:
        Client(custos.base_url, token=agent.secret).evaluate(
            subject=agent_subject(agent.id, agent.secret),
            action="read",
            resource={"type": "crm", "id": "x"},
        )
    assert refused.value.status_code == 403
    with pytest.raises(DecernError) as unauthenticated:
        Client(custos.base_url).evaluate(
            subject=agent_subject(agent.id, agent.secret), action="read", resource={"type": "crm", "id": "x"}
        )
    assert unauthenticated.value.status_code == 401
    # A subject without the agent's credential is a malformed request: 400.
    gateway = custos.nhi("authzen-gateway-2", ["custos:evaluate"])
    with pytest.raises(DecernError) as malformed:
        Client(custos.base_url, token=gateway.secret).evaluate(
            subject={"type": "agent", "id": agent.id}, action="read", resource={"type": "crm", "id": "x"}
        )
    assert malformed.value.status_code == 400


def test_pdp_metadata(custos: Custos):
    metadata = httpx.get(f"{custos.base_url}/.well-known/authzen-configuration").json()
    assert metadata["policy_decision_point"] == custos.issuer
    assert metadata["access_evaluation_endpoint"] == f"{custos.issuer}/access/v1/evaluation"
    assert metadata["access_evaluations_endpoint"] == f"{custos.issuer}/access/v1/evaluations"
