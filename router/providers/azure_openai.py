"""Azure OpenAI: OpenAI's Chat Completions bodies behind Azure's URLs, auth and filters.

``kind: azure_openai`` is its own small adapter on top of the OpenAI one: the
request and reply bodies (messages, tools, structured output, images, usage)
are OpenAI's, so they are translated by :class:`OpenAIAdapter`; what differs
is here:

- URLs. ``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``)
  and each model is served by a *deployment* (``models.<m>.deployment``, by
  default the model's name). With a dated ``api_version`` (default
  :data:`DEFAULT_API_VERSION`) a chat goes to
  ``openai/deployments/{deployment}/chat/completions?api-version={api_version}``;
  with ``api_version: v1`` (Azure's version-less v1 API) to
  ``openai/v1/chat/completions`` with the deployment as the body's ``model``.
- Auth. ``auth: api_key_header`` (the default) sends the key as ``api-key``;
  ``auth: bearer`` sends it as ``Authorization: Bearer`` (a Microsoft Entra ID
  token). The key is never put in a URL.
- Content filters. A reply or stream chunk whose ``prompt_filter_results`` or
  ``choices[].content_filter_results`` mark a category ``filtered: true``, or
  whose finish reason is ``content_filter``, is a
  :class:`~router.errors.ContentFilterError` naming the categories (a cut-off
  answer is never returned as a success). Unfiltered annotations are ignored,
  and so is the first stream chunk Azure sends with empty ``choices`` and only
  the prompt's results. A 400 ``content_filter`` error names its categories too
  (:mod:`router.providers.error_body`).
- Streaming usage. ``stream_options.include_usage`` is sent only with an
  ``api_version`` that accepts it (``v1``, ``preview``, or one dated 2024-09-01
  or later, preview or not); with an older one the stream has no usage and the
  router bills its own estimate.
- Health. The free listing is the resource's deployment list (``GET
  openai/deployments?api-version=2023-03-15-preview``, the last version that
  serves it); its ``data[].id`` are deployment names, so a configured model
  whose deployment is not there is reported missing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from router.errors import BadRequestError, ContentFilterError, ModelNotFoundError, ProviderError
from router.output import OutputRequest
from router.providers.base import Params, filtered, listed_models
from router.providers.content_filter import filter_summary
from router.providers.error_body import COMMON_RULES, ErrorBody, ErrorRules, classify
from router.providers.openai import ERROR_STATUS as OPENAI_ERROR_STATUS
from router.providers.openai import OpenAIAdapter
from router.types import Message, Reply, StreamEvent, Usage, WireRequest

__all__ = [
    "DEFAULT_API_VERSION",
    "DEPLOYMENTS_API_VERSION",
    "V1",
    "AzureAuth",
    "AzureOpenAIAdapter",
    "AzureSettings",
]

# The api-version sent when the YAML sets none: the latest dated GA version of the
# data-plane inference API.
DEFAULT_API_VERSION = "2024-10-21"
# api_version for Azure's version-less v1 API (openai/v1/..., model in the body).
V1 = "v1"
# The api-version of the deployment listing (health): the last one that serves it.
DEPLOYMENTS_API_VERSION = "2023-03-15-preview"
# The first dated api-version that accepts stream_options (include_usage).
_STREAM_USAGE_SINCE = "2024-09-01"

AzureAuth = Literal["api_key_header", "bearer"]

_ERROR_RULES: ErrorRules = (
    # 404 {"code": "DeploymentNotFound"}: the deployment (the model) is not there.
    (
        re.compile(r"deploymentnotfound|api deployment for this resource does not exist"),
        ModelNotFoundError,
    ),
    # A deployment whose model does not serve this operation (e.g. chat on an
    # embeddings model): the request, not the provider, is wrong.
    (re.compile(r"operationnotsupported"), BadRequestError),
    *COMMON_RULES,
)

# The status an error object inside a 2xx body or stream stands for, by code.
_ERROR_STATUS = {
    **OPENAI_ERROR_STATUS,
    "content_filter": 400,
    "DeploymentNotFound": 404,
    "RateLimitReached": 429,
    "429": 429,
    "401": 401,
}

# A category marked filtered anywhere in a body (Azure writes compact JSON; a model's
# text quoting this has its quotes escaped, so it does not match).
_FILTERED = re.compile(r'"filtered"\s*:\s*true')
_FILTERED_BYTES = re.compile(rb'"filtered"\s*:\s*true')


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """A ``kind: azure_openai`` provider's settings, resolved from its YAML."""

    api_version: str = DEFAULT_API_VERSION
    auth: AzureAuth = "api_key_header"
    # Deployment by model name; a model not here is deployed under its own name.
    deployments: Mapping[str, str] = field(default_factory=dict)

    def deployment(self, model: str) -> str:
        """The deployment that serves ``model``."""
        return self.deployments.get(model, model)

    def chat_path(self, model: str) -> str:
        """The chat request's path (with its query) relative to the resource endpoint."""
        if self.api_version == V1:
            return "openai/v1/chat/completions"
        return (
            f"openai/deployments/{self.deployment(model)}/chat/completions"
            f"?api-version={self.api_version}"
        )

    @property
    def stream_usage(self) -> bool:
        """Whether this api-version accepts ``stream_options`` (usage in streams)."""
        v = self.api_version
        return v in (V1, "preview") or v[:10] >= _STREAM_USAGE_SINCE


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI Chat Completions (see the module docstring)."""

    __slots__ = ("_settings",)
    api_root = "https://YOUR-RESOURCE.openai.azure.com"

    def __init__(
        self,
        provider: str,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        settings: AzureSettings | None = None,
    ) -> None:
        # Set first: the auth headers built by the base class depend on it.
        self._settings = settings or AzureSettings()
        super().__init__(provider, api_key, headers)

    def _auth(self, api_key: str | None) -> dict[str, str]:
        if not api_key:
            return {}
        if self._settings.auth == "bearer":
            return {"Authorization": f"Bearer {api_key}"}
        return {"api-key": api_key}

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """OpenAI's body (reasoning models judged by ``model``, the model's own name),
        sent to the deployment's URL with the deployment as ``model``."""
        request = super().chat_request(model, messages, params, stream=stream, output=output)
        body = dict(request.json or {})
        body["model"] = self._settings.deployment(model)
        if stream and not self._settings.stream_usage:
            del body["stream_options"]
        return dataclasses.replace(request, path=self._settings.chat_path(model), json=body)

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """An OpenAI ``chat.completion``; a filtered prompt or completion raises (with
        the usage the body reported: Azure bills a filtered answer)."""
        try:
            self._raise_if_filtered(model, body)
        except ContentFilterError as err:
            err.usage = self._usage_of(model, body)
            raise
        reply = super().parse_reply(model, body)
        if reply.finish_reason == "content_filter":
            raise filtered(self, model, _CUT, reply.usage)
        return reply

    def _usage_of(self, model: str, body: bytes) -> Usage | None:
        """The usage a filtered body reports, or None when it has none to read."""
        try:
            return super().parse_reply(model, body).usage
        except ContentFilterError as err:
            return err.usage
        except ProviderError:
            return None

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """An OpenAI chunk; Azure's first chunk (empty ``choices``, the prompt's filter
        results, an empty id) carries nothing; a filtered chunk raises."""
        self._raise_if_filtered(model, data)
        ev = super().parse_stream_event(model, event, data)
        if ev is None:
            return None
        if ev.finish_reason == "content_filter":
            raise filtered(self, model, _CUT)
        if ev.response_id == "":
            ev = dataclasses.replace(ev, response_id=None)
        return ev

    def _raise_if_filtered(self, model: str, body: bytes | str) -> None:
        """Raise ContentFilterError naming the categories when a body's prompt or
        completion filter results mark one filtered; annotations alone pass."""
        # A scan first: nearly every body has annotations only, and is parsed once, below.
        if isinstance(body, bytes):
            found = _FILTERED_BYTES.search(body) is not None
        else:
            found = _FILTERED.search(body) is not None
        if not found:
            return
        try:
            doc = json.loads(body)
        except ValueError:
            return  # not JSON: the OpenAI parser says what is wrong with it
        if not isinstance(doc, dict):
            return
        for what, results in (("prompt", _prompt_results(doc)), ("answer", _choice_results(doc))):
            summary = filter_summary(results)
            if summary is not None:
                raise filtered(
                    self, model, f"Azure's content filter stopped the {what} [{summary}]"
                )

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus Azure's codes (DeploymentNotFound, content_filter, ...)."""
        return classify(status, body, _ERROR_RULES, _ERROR_STATUS)

    def health_request(self) -> WireRequest:
        """``GET openai/deployments``: free, proves the key, lists the deployments."""
        return WireRequest("GET", f"openai/deployments?api-version={DEPLOYMENTS_API_VERSION}")

    def parse_models(self, body: bytes) -> set[str]:
        """The deployments listed, and each configured model whose deployment is one."""
        deployed = listed_models(self, body)
        served = {m for m, d in self._settings.deployments.items() if d in deployed}
        return deployed | served

    def missing_model_hint(self, model: str) -> str:
        return (
            f"no deployment {self._settings.deployment(model)!r} on this resource: deploy it,"
            " or set the model's deployment: to the name it is deployed under"
        )


# Why a reply whose finish reason is content_filter fails although no category says so.
_CUT = "Azure's content filter cut the answer short (finish_reason content_filter)"


def _prompt_results(doc: dict[str, Any]) -> list[Any]:
    # prompt_annotations: the name older api-versions used.
    entries = doc.get("prompt_filter_results") or doc.get("prompt_annotations") or []
    if not isinstance(entries, list):
        return []
    return [e.get("content_filter_results") for e in entries if isinstance(e, dict)]


def _choice_results(doc: dict[str, Any]) -> list[Any]:
    choices = doc.get("choices") or []
    if not isinstance(choices, list):
        return []
    return [c.get("content_filter_results") for c in choices if isinstance(c, dict)]
