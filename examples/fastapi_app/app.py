"""A FastAPI app serving one route of yaml-llm-router, with Prometheus metrics.

    POST /analysis   {"ticker": "ACME", "prices": [101.2, 102.8], "horizon_days": 5}
    GET  /metrics    Prometheus text format (router.metrics.prometheus)
    GET  /stats      router.stats() as JSON

Run it (offline: the mock provider answers; ROUTER_LIVE=1 uses the paid providers
with keys from the environment):

    pip install "yaml-llm-router[examples]"
    uvicorn app:app --app-dir examples/fastapi_app --port 8000

One router per process, opened in the app's lifespan; every handler is ``async``, so
calls and scrapes run on the router's own event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from router import (
    AllProvidersFailedError,
    BudgetExceededError,
    DeadlineExceededError,
    Router,
    RouterError,
)
from router.metrics.prometheus import register

CONFIG = Path(os.environ.get("ROUTER_CONFIG", Path(__file__).with_name("providers.yaml")))
ROUTE = "analysis"

# Router failures -> HTTP status. Messages are safe to return: router errors never
# carry a key (they are redacted when built).
_STATUS: list[tuple[type[RouterError], int]] = [
    (BudgetExceededError, 429),  # the budget is spent: try again next period
    (DeadlineExceededError, 504),  # no answer within the route's deadline
    (AllProvidersFailedError, 502),  # every provider of the chain failed
]


class AnalysisIn(BaseModel):
    ticker: str = Field(min_length=1, max_length=12, pattern=r"^[A-Z0-9.\-]+$")
    prices: list[float] = Field(min_length=1, max_length=500)
    horizon_days: int = Field(ge=1, le=365)


class AnalysisOut(BaseModel):
    text: str
    provider: str
    model: str
    cost_usd: str  # exact decimal, as a string
    input_tokens: int
    output_tokens: int
    latency_s: float
    attempts: int


def create_app(config: Path = CONFIG, live: bool | None = None) -> FastAPI:
    """The app. ``live`` (default: ROUTER_LIVE=1 in the environment) loads the keys from
    the environment; otherwise none are, and the keyed providers are disabled."""
    live = os.environ.get("ROUTER_LIVE") == "1" if live is None else live
    registry = CollectorRegistry()  # or prometheus_client.REGISTRY for process metrics too

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        env = os.environ if live else {}
        async with Router.from_yaml(config, env=env, require_env=live) as router:
            register(router, registry)
            app.state.router = router
            yield

    app = FastAPI(title="yaml-llm-router example", lifespan=lifespan)

    @app.post("/analysis")
    async def analysis(body: AnalysisIn, request: Request) -> AnalysisOut:
        router: Router = request.app.state.router
        try:
            result = await router.complete(ROUTE, body.model_dump())
        except RouterError as e:
            status = next((code for cls, code in _STATUS if isinstance(e, cls)), 500)
            raise HTTPException(status, {"error": type(e).__name__, "message": str(e)}) from e
        return AnalysisOut(
            text=result.text,
            provider=result.provider,
            model=result.model,
            cost_usd=str(result.cost_usd),
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            latency_s=result.latency_s,
            attempts=len(result.attempts),
        )

    @app.get("/metrics")
    async def metrics() -> Response:  # async: rendered on the router's loop, no thread
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        snapshot: dict[str, Any] = request.app.state.router.stats()
        return snapshot

    return app


app = create_app()
