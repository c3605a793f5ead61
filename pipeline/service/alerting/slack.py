"""Where alerts go: Slack through the real ``slack_sdk.WebClient``, or the console.

Retries (notes/platform.md section 1.2): slack_sdk retries nothing but connection errors by
default, so the client gets ``RateLimitErrorRetryHandler`` (HTTP 429, honouring ``Retry-After``),
``ServerErrorRetryHandler`` (500/503) and ``ConnectionErrorRetryHandler``. What still fails is
classified: configuration problems (a bad token, a missing channel, the bot not invited) are
terminal and name the setting to fix; the rest is transient. The token is never put in a message.

Every post has ``mrkdwn=False``: the top-level ``text`` (the notification, and the whole message
when Slack refuses the blocks) embeds event values, and mrkdwn cannot escape ``*``, ``_`` or ``~``.
The blocks say for themselves what is formatted (``pipeline.service.alerting.messages``).
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from pipeline.core.errors import TerminalError, TrailwardenError, TransientError
from pipeline.core.retry import call_with_retries, exponential
from pipeline.service.alerting.messages import Message, as_text

TOKEN_ENV = "SLACK_BOT_TOKEN"
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")  # a Slack channel ID, as opposed to a name
METADATA_TYPE = "trailwarden_alert"
FIX = {
    "invalid_auth": f"Slack rejected the token: check {TOKEN_ENV}",
    "not_authed": f"Slack got no token: set {TOKEN_ENV}",
    "token_revoked": f"the Slack token was revoked: put a new bot token in {TOKEN_ENV}",
    "token_expired": f"the Slack token expired: put a new bot token in {TOKEN_ENV}",
    "account_inactive": f"the Slack bot's account is inactive: reinstall the app and update {TOKEN_ENV}",
    "no_permission": "the Slack app lacks permission: grant it chat:write",
    "missing_scope": "the Slack app lacks a scope: grant chat:write, channels:history (crash recovery) and "
                     "channels:read (to find a #name)",
    "channel_not_found": "Slack has no such channel: check `slack.channel` in the config (a #name or an ID)",
    "not_in_channel": "the Slack bot is not in the channel: invite it (/invite @your-bot) or fix `slack.channel`",
    "is_archived": "the Slack channel is archived: unarchive it or change `slack.channel`",
}
PAYLOAD_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long",
                            "no_text", "invalid_arguments"})


class Sender(Protocol):
    destination: str
    pace: float  # seconds between posts

    def post(self, message: Message, *, key: str, thread_ts: str | None = None) -> str: ...

    def find(self, key: str, since: datetime, thread_ts: str | None = None) -> str | None: ...

    def update(self, message: Message, *, ts: str, channel_id: str | None = None) -> str | None: ...


GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class SlackSender:
    """Posts with ``chat.postMessage``; each message carries its outbox key in its metadata, so a
    post whose outcome a crash hid can be found in the channel instead of being sent twice."""

    def __init__(self, token: str, channel: str, base_url: str | None = None, *, timeout: float = 10,
                 pace: float = 1.0, retries: int = 3, sleep: Callable[[float], None] | None = None):
        self.destination = channel
        self.pace = pace
        self.channel_id: str | None = channel if _CHANNEL_ID.match(channel) else None
        self._retries = retries
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        url = base_url or "https://slack.com/api/"
        # Posting retries only what Slack provably did not process (HTTP 429): a 5xx, a timeout or
        # a dropped connection may hide a message that was posted, so post() first looks for it
        # in the channel (by its metadata key) before trying again. Reads retry everything.
        self.client = WebClient(token=token, base_url=url, timeout=int(timeout),
                                retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=retries)])
        self.reader = WebClient(
            token=token, base_url=url, timeout=int(timeout),
            retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=retries),
                            RateLimitErrorRetryHandler(max_retry_count=retries),
                            ServerErrorRetryHandler(max_retry_count=retries)])

    def post(self, message: Message, *, key: str, thread_ts: str | None = None) -> str:
        """Post once: after an ambiguous failure, look for the message before posting again."""
        started = datetime.now(UTC)

        def posted_anyway(error: TrailwardenError) -> str | None:
            if not getattr(error, "maybe_posted", False):
                return None
            return self.find(key, started - timedelta(minutes=10), thread_ts)

        return call_with_retries(lambda: self._post_once(message, key=key, thread_ts=thread_ts),
                                 classify=_as_is, retries=self._retries, wait=exponential(1.0),
                                 sleep=self._sleep, recover=posted_anyway)

    def _post_once(self, message: Message, *, key: str, thread_ts: str | None) -> str:
        args: dict[str, Any] = {"channel": self.channel_id or self.destination, "text": message.text,
                                "mrkdwn": False, "thread_ts": thread_ts, "unfurl_links": False, "unfurl_media": False,
                                "metadata": {"event_type": METADATA_TYPE, "event_payload": {"key": key}}}
        try:
            response = self._call(self.client.chat_postMessage, blocks=message.blocks, **args)
        except _PayloadRejected:  # degrade once: the plain text alone
            response = self._call(self.client.chat_postMessage, **args)
        self.channel_id = response.get("channel") or self.channel_id
        return str(response["ts"])

    def update(self, message: Message, *, ts: str, channel_id: str | None = None) -> str | None:
        """Replace a message's text and blocks (``chat.update``; idempotent, so retried freely).
        Returns Slack's error code when the message is gone (deleted: nothing left to update)."""
        channel = channel_id or self._channel_id()
        try:
            self._call(self.reader.chat_update, channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except _PayloadRejected:
            self._call(self.reader.chat_update, channel=channel, ts=ts, text=message.text)
        except TerminalError as exc:
            code = getattr(exc, "slack_error", None)
            if code in GONE:
                return str(code)
            raise
        return None

    def find(self, key: str, since: datetime, thread_ts: str | None = None) -> str | None:
        """The ts of an earlier message carrying ``key``, if the channel has one."""
        channel = self._channel_id()
        cursor = None
        while True:
            if thread_ts:
                response = self._call(self.reader.conversations_replies, channel=channel, ts=thread_ts,
                                      oldest=f"{since.timestamp():.6f}", include_all_metadata=True, cursor=cursor)
            else:
                response = self._call(self.reader.conversations_history, channel=channel,
                                      oldest=f"{since.timestamp():.6f}", include_all_metadata=True,
                                      limit=200, cursor=cursor)
            for msg in response.get("messages") or []:
                payload = ((msg.get("metadata") or {}).get("event_payload") or {})
                if payload.get("key") == key:
                    return str(msg["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    def _channel_id(self) -> str:
        if self.channel_id:
            return self.channel_id
        name = self.destination.lstrip("#")
        cursor = None
        while True:
            response = self._call(self.reader.conversations_list, types="public_channel,private_channel",
                                  exclude_archived=True, limit=1000, cursor=cursor)
            for channel in response.get("channels") or []:
                if name in (channel.get("name"), channel.get("id")):
                    self.channel_id = str(channel["id"])
                    return self.channel_id
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                raise TerminalError(FIX["channel_not_found"] + f" ({self.destination} was not found)")

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except SlackApiError as exc:
            raise _classified(exc) from None
        except SlackClientError as exc:  # the request could not be made (a bad address): nothing was sent
            raise TerminalError(f"Slack request not made ({type(exc).__name__}: {exc}); check `slack.base_url`"
                                "; the alerts stay pending") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            refused = isinstance(reason, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError)
            raise _transient(f"Slack is unreachable ({reason}); the alerts stay pending",
                             maybe_posted=not refused) from None


def _as_is(exc: Exception) -> TrailwardenError:
    """``_post_once`` raises classified errors already; anything else is not ours to retry."""
    if isinstance(exc, TrailwardenError):
        return exc
    raise exc


class _PayloadRejected(TerminalError):
    pass


def _classified(exc: SlackApiError) -> Exception:
    code = str(exc.response.get("error") or "unknown_error")
    status = getattr(exc.response, "status_code", 0)
    if code in FIX:
        return TerminalError(f"{FIX[code]} (Slack said {code}); the alerts stay pending")
    if code in GONE:
        gone = TerminalError(f"the Slack message is gone ({code})")
        gone.slack_error = code  # type: ignore[attr-defined]
        return gone
    if code in PAYLOAD_ERRORS:
        return _PayloadRejected(f"Slack rejected the message ({code})")
    if code == "ratelimited" or status == 429:  # refused, not processed; already retried by slack_sdk
        return _transient("Slack kept rate-limiting after retries (ratelimited); the alerts stay pending",
                          maybe_posted=False, retry=False)
    return _transient(f"Slack failed ({code}, HTTP {status}); the alerts stay pending", maybe_posted=True)


def _transient(message: str, *, maybe_posted: bool, retry: bool = True) -> TransientError:
    """A transient error that says whether the message may have been posted all the same (a
    timeout, a 5xx) - then the channel is checked before posting again - and whether to retry."""
    exc = TransientError(message)
    exc.maybe_posted = maybe_posted  # type: ignore[attr-defined]
    exc.retry = retry  # type: ignore[attr-defined]
    return exc


class ConsoleSender:
    """When no ``slack:`` is configured: the same messages, printed. (Configured without a token,
    Slack is still the destination: see ``missing_token``.)"""

    destination = "console"
    pace = 0.0

    def __init__(self, echo: Callable[[str], None]):
        self._echo = echo
        self._posted = 0

    def post(self, message: Message, *, key: str, thread_ts: str | None = None) -> str:
        self._posted += 1
        prefix = "  (reply) " if thread_ts else ""
        self._echo(prefix + as_text(message).replace("\n", "\n" + prefix) + "\n")
        return f"console-{key[:12]}"

    def find(self, key: str, since: datetime, thread_ts: str | None = None) -> str | None:
        return None  # a console cannot be asked; an interrupted print is printed again

    def update(self, message: Message, *, ts: str, channel_id: str | None = None) -> str | None:
        self._echo("  (updated) " + as_text(message).replace("\n", "\n  (updated) ") + "\n")
        return None


def missing_token(destination: str, pending: int) -> TerminalError:
    """The error of an alert step whose Slack destination has no token: the alerts stay pending
    for Slack (never printed instead) until the token is set."""
    return TerminalError(f"{TOKEN_ENV} is not set, so nothing can be posted to {destination}: "
                         f"{pending} alert(s) stay pending; set {TOKEN_ENV} to the Slack bot's token")


def token_from_env() -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None
