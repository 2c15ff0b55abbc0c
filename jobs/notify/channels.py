"""Where notifications go: a channel is anything with ``send(key, rule, events)`` (:class:`Channel`), made by
a factory registered under a type name (:func:`register_channel`), as storage backends are
(``storage/registry.py``). Built in:

- ``webhook``: a JSON POST; with a ``secret`` the body is signed, ``X-DeviceVault-Signature: sha256=<hex>``
  (HMAC-SHA256 of the exact body bytes with the secret), and ``X-DeviceVault-Delivery`` carries the
  delivery key (the same on every retry of one delivery: a receiver can drop repeats);
- ``slack``, ``teams``: the incoming-webhook formats (Slack's ``text``; a Teams Adaptive Card message);
- ``email``: plain text over SMTP (``ssl`` for SMTPS, else ``starttls`` when asked, ``username`` /
  ``password`` to log in; ``ca_file``: a private CA), one mail per delivery: one event, or a run's digest.

``events`` are :meth:`jobs.notify.events.Event.as_dict` dicts: one, or several for a digest. A failed send
raises :class:`ChannelError` with a line that names the channel and never a secret (no URL path, no password).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Protocol
from urllib.parse import urlparse

from jobs.notify.base import ChannelConfig, NotifyError

#: a Slack/Teams message is cut here (their limits are a few tens of KB; a diff can be any size)
CHAT_LIMIT = 3500
SIGNATURE_HEADER = "X-DeviceVault-Signature"
DELIVERY_HEADER = "X-DeviceVault-Delivery"
EVENT_HEADER = "X-DeviceVault-Event"


class ChannelError(NotifyError):
    """A send failed (retried by the delivery queue); the message names the channel, no secret."""

    kind = "notify_channel"


class Channel(Protocol):
    def send(self, key: str, rule: str, events: list[dict]) -> None: ...


_TYPES: dict[str, Callable[[ChannelConfig], Channel]] = {}


def register_channel(type_name: str, factory: Callable[[ChannelConfig], Channel]) -> None:
    _TYPES[type_name] = factory


def channel_types() -> dict[str, Callable[[ChannelConfig], Channel]]:
    return dict(_TYPES)


def open_channel(config: ChannelConfig) -> Channel:
    return _TYPES[config.type](config)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _where(url: str) -> str:
    """``https://host:port``: enough to name a receiver, never its path or query (Slack's token)."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or '?'}{':' + str(parsed.port) if parsed.port else ''}"


def _post(name: str, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "DeviceVault",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured URL
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"channel {name}: {_where(url)} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ChannelError(f"channel {name}: {_where(url)} cannot be reached: {reason}") from None


def message_text(events: list[dict], *, diff_limit: int | None = None) -> str:
    """Plain text of ``events``: each one's title, text and diff (cut at ``diff_limit`` characters)."""
    parts = []
    for event in events:
        lines = [event["title"]]
        if event.get("text"):
            lines.append(event["text"])
        diff = event.get("diff") or ""
        if diff:
            if diff_limit is not None and len(diff) > diff_limit:
                diff = diff[:diff_limit] + "\n… (diff cut; devicevault diff shows it whole)\n"
            lines.append(diff.rstrip("\n"))
        parts.append("\n\n".join(lines))
    return ("\n\n" + "-" * 72 + "\n\n").join(parts) + "\n"


def subject(events: list[dict]) -> str:
    if len(events) == 1:
        return f"[DeviceVault] {events[0]['title']}"
    runs = sorted({e.get("run_id", "") for e in events} - {""})
    return f"[DeviceVault] {len(events)} notifications" + (f" of run {runs[0]}" if len(runs) == 1 else "")


class Webhook:
    def __init__(self, config: ChannelConfig):
        self.name = config.name
        self.url = config.options["url"]
        self.secret = config.options.get("secret") or ""
        self.timeout = float(config.options.get("timeout", 10))

    def send(self, key: str, rule: str, events: list[dict]) -> None:
        payload: dict[str, Any] = ({"delivery": key, "rule": rule, **events[0]} if len(events) == 1 else
                                   {"delivery": key, "rule": rule, "kind": "digest", "events": events})
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {DELIVERY_HEADER: key, EVENT_HEADER: str(payload["kind"])}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        _post(self.name, self.url, body, headers, self.timeout)


class Slack(Webhook):
    def send(self, key: str, rule: str, events: list[dict]) -> None:
        text = message_text(events, diff_limit=CHAT_LIMIT)
        _post(self.name, self.url, json.dumps({"text": text[:CHAT_LIMIT * 2]}).encode(), {}, self.timeout)


class Teams(Webhook):
    def send(self, key: str, rule: str, events: list[dict]) -> None:
        blocks: list[dict] = []
        for event in events:
            blocks.append({"type": "TextBlock", "text": event["title"], "weight": "Bolder", "wrap": True})
            if event.get("text"):
                blocks.append({"type": "TextBlock", "text": event["text"], "wrap": True})
            if event.get("diff"):
                blocks.append({"type": "TextBlock", "text": event["diff"][:CHAT_LIMIT], "fontType": "Monospace",
                               "wrap": True})
        card = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "version": "1.4", "body": blocks}
        body = {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}
        _post(self.name, self.url, json.dumps(body).encode(), {}, self.timeout)


class Email:
    def __init__(self, config: ChannelConfig):
        o = config.options
        self.name = config.name
        self.host, self.port = str(o["host"]), int(o["port"])
        self.ssl, self.starttls = bool(o.get("ssl", False)), bool(o.get("starttls", self.port == 587))
        self.username, self.password = str(o.get("username") or ""), str(o.get("password") or "")
        self.sender, self.to = str(o["from"]), list(o["to"])
        self.timeout = float(o.get("timeout", 30))
        self.digest = bool(o.get("digest", False))
        self.ca_file = str(o.get("ca_file") or "") or None  # a private CA's certificate (PEM)

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def message(self, key: str, events: list[dict]) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = subject(events)
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = formatdate(usegmt=True)
        # the same Message-ID on every try of one delivery: a mail system can tell a repeat
        mail["Message-ID"] = make_msgid(idstring=hashlib.sha256(key.encode()).hexdigest()[:32],
                                        domain="devicevault")
        mail["X-DeviceVault-Delivery"] = key
        mail.set_content(message_text(events))
        return mail

    def send(self, key: str, rule: str, events: list[dict]) -> None:
        where = f"channel {self.name}: SMTP {self.host}:{self.port}"
        try:
            if self.ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if self.starttls and not self.ssl:
                    smtp.starttls(context=self._tls())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(self.message(key, events))
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"{where}: login as {self.username} refused ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise ChannelError(f"{where}: {exc.smtp_code} {text}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"{where}: {exc}") from None


register_channel("webhook", Webhook)
register_channel("slack", Slack)
register_channel("teams", Teams)
register_channel("email", Email)
