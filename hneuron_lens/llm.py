"""The HTTP transport of the optional LLM helpers (judge, span tagger), on ``httpx``.

:class:`ChatClient` posts to an OpenAI-compatible ``/chat/completions`` endpoint and returns the
first choice's text. It is what :class:`~hneuron_lens.judge.LLMJudge` and
:class:`~hneuron_lens.answer.LLMSpanTagger` share. Rules:

* **The key stays with its host.** The key is read from the environment variable ``api_key_env``
  at each call (never stored on the object) and sent as ``Authorization: Bearer`` to the
  endpoint's own origin only. Redirects are never followed by the HTTP library: a 307/308 to the
  same scheme, host and port is re-sent (POST and body kept); any other redirect (another host or
  port, http->https, 301/302/303 which would turn the POST into a GET) is an error that names
  the target, so the key never travels to a host the user did not name.
* **Plain http is for loopback.** ``http://`` to a host other than ``localhost`` / ``127.0.0.0/8`` /
  ``::1`` logs a warning once, when the client is made: the key and the data cross the network
  unencrypted. Credentials written into the URL (``https://user:key@host``) are refused.
* **Nothing secret in logs or errors.** Messages name the URL without its query string; the key
  never appears in a message, a log line, a cache file or ``to_dict()``.
* **Timeouts and retries.** Each attempt has ``timeout`` seconds (connect, read, write, pool).
  Timeouts, connection errors, HTTP 429 and 5xx are retried up to ``max_retries`` times with
  exponential backoff (``backoff_s * 2**attempt``, at most ``max_backoff_s``; a numeric
  ``Retry-After`` header is honoured within that cap). Other 4xx answers are not retried.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

from hneuron_lens.errors import RemoteError, UsageError

logger = logging.getLogger(__name__)

_FOLLOW = (307, 308)
"""Redirects re-sent with the same method and body (same origin only)."""


class LLMError(RemoteError):
    """The LLM endpoint failed after its retries, refused the request or answered malformed
    data (also importable as ``hneuron_lens.judge.LLMJudgeError``)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: Any) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _public(url: Any) -> str:
    """The URL without query string, fragment or user info (safe to print)."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


class ChatClient:
    """Post chat messages to an OpenAI-compatible endpoint (see the module docstring).

    Args:
        base_url: endpoint root, e.g. ``"https://api.openai.com/v1"`` or
            ``"http://127.0.0.1:8000/v1"``; ``/chat/completions`` is appended.
        model: model name sent with each request.
        api_key_env: environment variable holding the API key (unset: no Authorization header,
            as local servers such as vLLM or llama.cpp need none).
        timeout: seconds per attempt.
        max_retries: retries after the first attempt (timeouts, connection errors, 429, 5xx).
        backoff_s: first backoff delay in seconds.
        max_backoff_s: the longest single delay.

    Raises:
        UsageError: a URL that is not ``http(s)://host...`` or that carries credentials; bad
            numbers.

    Example:
        >>> client = ChatClient("http://127.0.0.1:8000/v1", "gpt-4o-mini")  # doctest: +SKIP
        >>> client.complete([{"role": "user", "content": "Say OK"}])  # doctest: +SKIP
        'OK'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        import httpx

        if max_retries < 0 or timeout <= 0 or backoff_s < 0 or max_backoff_s < 0:
            raise UsageError(
                "need max_retries >= 0, timeout > 0, backoff_s >= 0 and max_backoff_s >= 0",
                field="max_retries/timeout/backoff_s",
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"base_url {base_url!r} is not an http(s) URL",
                field="base_url",
                hint="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1",
            )
        if parts.username or parts.password:
            raise UsageError(
                "base_url carries credentials (user:key@host)",
                field="base_url",
                hint=f"remove them and put the key in the environment variable ${api_key_env}",
            )
        self.url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.n_requests = 0
        """HTTP requests sent so far (retries and same-origin redirects included)."""
        if self.url.scheme == "http" and not is_loopback(self.url.host):
            logger.warning(
                "LLM endpoint %s uses plain http to a non-loopback host: the API key and the "
                "prompts cross the network unencrypted; use https",
                _public(self.url),
            )
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)

    def to_dict(self) -> dict[str, Any]:
        """Settings for provenance (the key's variable name, never the key)."""
        return {
            "url": _public(self.url),
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
        }

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def complete(self, messages: list[dict[str, str]], *, temperature: float = 0.0) -> str:
        """Send ``messages``; return ``choices[0].message.content``.

        Raises:
            LLMError: after all retries, on a 4xx answer, on a redirect that is not followed,
                or on a payload without ``choices[0].message.content``.
        """
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": temperature}
        where = _public(self.url)
        last_error = ""
        retry_after: str | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "LLM endpoint: %s; retry %d/%d in %.2fs",
                    last_error,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
            retry_after = None
            try:
                response = self._post(body)
            except httpx.TimeoutException:
                last_error = f"timeout after {self.timeout:g} s calling {where}"
                continue
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__} calling {where}"
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                last_error = f"HTTP {status} from {where}"
                retry_after = response.headers.get("retry-after")
                continue
            if status >= 400:
                hint = (
                    f"is ${self.api_key_env} set to a valid key?"
                    if status in (401, 403)
                    else "check base_url and the model name"
                )
                raise LLMError(f"HTTP {status} from {where}", field="base_url", hint=hint)
            try:
                payload = response.json()
                return str(payload["choices"][0]["message"]["content"])
            except ValueError:
                raise LLMError(
                    f"non-JSON answer from {where}",
                    field="base_url",
                    hint="is base_url an OpenAI-compatible endpoint?",
                ) from None
            except (KeyError, IndexError, TypeError):
                raise LLMError(
                    f"no choices[0].message.content in the answer from {where}",
                    field="base_url",
                    hint="is base_url an OpenAI-compatible chat-completions endpoint?",
                ) from None
        raise LLMError(
            f"giving up after {self.max_retries + 1} attempts: {last_error}",
            field="base_url",
            hint="check that the endpoint is up; raise max_retries / timeout if it is slow",
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff; a numeric ``Retry-After`` lengthens it; capped."""
        delay = self.backoff_s * 2 ** (attempt - 1)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = max(delay, float(retry_after))
        return min(delay, self.max_backoff_s)

    def _post(self, body: dict[str, Any]) -> Any:
        """One POST, re-sent on same-origin 307/308 redirects; other redirects raise."""
        url = self.url
        for _ in range(5):
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key and _origin(url) == _origin(self.url):
                headers["Authorization"] = f"Bearer {key}"
            self.n_requests += 1
            response = self._client.post(url, json=body, headers=headers)
            if not response.is_redirect:
                return response
            location = response.headers.get("location", "")
            target = url.join(location)
            response.close()
            if response.status_code in _FOLLOW and _origin(target) == _origin(self.url):
                url = target
                continue
            raise LLMError(
                f"the endpoint redirected ({response.status_code}) to {_public(target)}; "
                "not followed, so that the API key and prompts stay with "
                f"{self.url.scheme}://{self.url.host}"
                + (f":{self.url.port}" if self.url.port else ""),
                field="base_url",
                hint="if you trust the new address, set base_url to it",
            )
        raise LLMError(
            f"too many redirects from {_public(self.url)}",
            field="base_url",
            hint="set base_url to the final address",
        )
