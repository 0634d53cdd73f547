"""Email notifications delivered to a real SMTP server: aiosmtpd, started here on a free
loopback port. An email channel is created through the API, an agent asks for more than its
ceiling, and the message the server receives is read with Python's own `email` parser."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from custos import Custos, unique

SENDER = "custos@example.com"
RECIPIENTS = ["reviewers@example.com", "oncall@example.com"]


class Inbox:
    """An aiosmtpd handler that keeps every envelope it is given."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def wait_for(self, needle: str, timeout: float = 20.0):
        """The first envelope whose message holds `needle` (decoded), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for envelope in list(self.envelopes):
                if needle in text_of(parse(envelope)):
                    return envelope
            time.sleep(0.1)
        raise AssertionError(f"no message with {needle!r} arrived in {timeout} s")


def parse(envelope) -> EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def email_channel(custos: Custos, port: int) -> dict:
    return custos._admin(
        "POST",
        "/v1/notifications/channels",
        {
            "name": unique("reviewers-mail"),
            "kind": "email",
            "team": custos.team,
            "email": {
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "tls": "none",
                "from": f"Custos <{SENDER}>",
                "to": RECIPIENTS,
            },
        },
        201,
    )


def ask_beyond_the_ceiling(custos: Custos, key: str, purpose: str):
    return custos.anonymous.post(
        "/v1/tasks",
        headers={"authorization": f"Bearer {key}"},
        json={"purpose": purpose, "scope": ["crm:delete:customers/42"]},
    )


def test_an_approval_request_arrives_by_email(custos: Custos, smtp):
    inbox, port = smtp
    channel = email_channel(custos, port)
    assert channel["email"]["to"] == RECIPIENTS
    assert "password" not in channel["email"]
    agent = custos.nhi("mailed-agent", ["crm:read"])

    # A purpose that tries to add a header: refused before anything is filed, as every
    # control character in a purpose is.
    refused = ask_beyond_the_ceiling(custos, agent.secret, "tidy up\r\nBcc: evil@example.com")
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_failed"

    # One that gets through validation (a Unicode line separator, markup) stays in the body.
    purpose = "tidy up\u2028Bcc: evil@example.com <b>now</b>"
    asked = ask_beyond_the_ceiling(custos, agent.secret, purpose)
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval_id"]
    link = f"{custos.base_url}/ui/approvals/{approval}"

    envelope = inbox.wait_for(link)
    # The envelope goes to the channel's recipients and no one else.
    assert envelope.mail_from == SENDER
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
    message = parse(envelope)
    names = {name.lower() for name in message.keys()}
    assert "bcc" not in names and "cc" not in names, message.keys()
    assert sorted(a.addr_spec for a in message["to"].addresses) == sorted(RECIPIENTS)
    assert message["from"].addresses[0].addr_spec == SENDER
    assert message["subject"] == f"Custos: approval requested for {agent.name}"
    assert message["message-id"]

    text = text_of(message)
    assert f"Review it: {link}" in text
    assert f"Requested by: nhi:{agent.id}" in text
    assert "Beyond the ceiling: crm:delete:customers/42" in text
    # The purpose is there, as text on its own line.
    assert "Purpose: tidy up Bcc: evil@example.com <b>now</b>" in text.splitlines()
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;now&lt;/b&gt;" in html and "<b>now</b>" not in html
    assert f'href="{link}"' in html

    # The delivery is recorded as delivered at the first attempt.
    deliveries = custos._admin(
        "GET", f"/v1/notifications/deliveries?channel={channel['id']}&state=delivered"
    )["items"]
    subjects = [d["subject"] for d in deliveries]
    deadline = time.monotonic() + 10
    while f"approval:{approval}" not in subjects and time.monotonic() < deadline:
        time.sleep(0.1)
        deliveries = custos._admin(
            "GET", f"/v1/notifications/deliveries?channel={channel['id']}&state=delivered"
        )["items"]
        subjects = [d["subject"] for d in deliveries]
    delivered = next(d for d in deliveries if d["subject"] == f"approval:{approval}")
    assert delivered["attempts"] == 1
    assert delivered["last_error"] is None


def test_a_test_message_goes_out_on_demand(custos: Custos, smtp):
    inbox, port = smtp
    channel = email_channel(custos, port)
    queued = custos._admin(
        "POST", f"/v1/notifications/channels/{channel['id']}/test", None, 202
    )
    assert queued["state"] == "pending"
    envelope = inbox.wait_for(channel["name"])
    message = parse(envelope)
    assert message["subject"] == "Custos: test notification"
    assert f"{custos.base_url}/ui/approvals" in text_of(message)
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
