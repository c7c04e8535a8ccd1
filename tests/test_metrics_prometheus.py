"""Prometheus: a fresh registry scraped after the scripted mix holds exact values and labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.metrics.prometheus import register
from tests.test_metrics_stats import FLAKY_COST, STEADY_COST, mix_router, run_mix

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(registry: CollectorRegistry) -> dict[Sample, float]:
    """Every sample as {(name, sorted labels): value}."""
    out: dict[Sample, float] = {}
    for family in registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def named(samples: dict[Sample, float], name: str) -> dict[tuple[str, ...], float]:
    """The samples of one name, keyed by their label values (in label-name order)."""
    return {
        tuple(v for _, v in labels): value for (n, labels), value in samples.items() if n == name
    }


async def test_scrape_after_the_mix_has_exact_counters_and_label_sets(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with mix_router(tmp_path) as router:
        register(router, registry)
        await run_mix(router)
        samples = scrape(registry)
        text = generate_latest(registry).decode()

    # label names sort alphabetically: error_type, outcome, route
    assert named(samples, "llm_calls_total") == {
        ("none", "ok", "r"): 3,
        ("all_providers_failed", "error", "bad"): 2,
        ("budget_exceeded", "error", "costly"): 1,
    }
    # error_type, model, outcome, provider, route
    assert named(samples, "llm_attempts_total") == {
        ("server", "m1", "error", "flaky", "r"): 2,
        ("none", "m2", "ok", "steady", "r"): 1,
        ("none", "m1", "ok", "flaky", "r"): 2,
        ("auth", "m3", "error", "badkey", "bad"): 1,
        ("bad_request", "m4", "error", "picky", "bad"): 2,
        ("none", "m3", "skipped", "badkey", "bad"): 1,
        ("none", "m5", "skipped", "pricey", "costly"): 1,
    }
    # model, provider, reason, route
    assert named(samples, "llm_skips_total") == {
        ("m3", "badkey", "cooldown", "bad"): 1,
        ("m5", "pricey", "budget", "costly"): 1,
    }
    # model, provider, route
    assert named(samples, "llm_retries_total") == {("m1", "flaky", "r"): 1}
    assert named(samples, "llm_fallbacks_total") == {
        ("m1", "flaky", "r"): 1,
        ("m3", "badkey", "bad"): 2,
    }
    # direction, model, provider, route (zero counts are not created)
    assert named(samples, "llm_tokens_total") == {
        ("input", "m2", "steady", "r"): 1,
        ("output", "m2", "steady", "r"): 5,
        ("input", "m1", "flaky", "r"): 2,
        ("output", "m1", "flaky", "r"): 10,
    }
    assert named(samples, "llm_cost_usd_total") == {
        ("m2", "steady", "r"): pytest.approx(float(STEADY_COST)),
        ("m1", "flaky", "r"): pytest.approx(float(2 * FLAKY_COST)),
    }

    # Histograms: counts per label set, cumulative buckets ending at +Inf.
    assert named(samples, "llm_call_duration_seconds_count") == {
        ("ok", "r"): 3,
        ("error", "bad"): 2,
        ("error", "costly"): 1,
    }
    assert named(samples, "llm_attempt_duration_seconds_count") == {
        ("m1", "error", "flaky"): 2,
        ("m1", "ok", "flaky"): 2,
        ("m2", "ok", "steady"): 1,
        ("m3", "error", "badkey"): 1,
        ("m4", "error", "picky"): 2,
    }
    assert named(samples, "llm_time_to_first_token_seconds_count") == {("m1", "flaky"): 1}
    le_inf = (("le", "+Inf"), ("model", "m1"), ("outcome", "error"), ("provider", "flaky"))
    inf = samples[("llm_attempt_duration_seconds_bucket", le_inf)]
    assert inf == 2
    buckets = [
        v
        for (n, labels), v in samples.items()
        if n == "llm_call_duration_seconds_bucket" and ("route", "r") in labels
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 3

    # Gauges read at scrape time.
    assert named(samples, "llm_provider_cooldown") == {
        ("badkey",): 1,
        ("flaky",): 0,
        ("picky",): 0,
        ("pricey",): 0,
        ("steady",): 0,
    }
    assert set(named(samples, "llm_provider_in_flight").values()) == {0}
    assert named(samples, "llm_budget_remaining_usd") == {("tiny",): 0.01}
    assert named(samples, "llm_budget_limit_usd") == {("tiny",): 0.01}
    assert named(samples, "llm_budget_spent_usd") == {("tiny",): 0}

    # Every label name used, and every metric has TYPE and HELP lines.
    label_names = {k for (_, labels) in samples for k, _ in labels}
    assert label_names == {
        "route",
        "provider",
        "model",
        "outcome",
        "error_type",
        "reason",
        "direction",
        "budget",
        "le",
    }
    for metric in (
        "llm_calls_total counter",
        "llm_attempts_total counter",
        "llm_call_duration_seconds histogram",
        "llm_attempt_duration_seconds histogram",
        "llm_time_to_first_token_seconds histogram",
        "llm_tokens_total counter",
        "llm_cost_usd_total counter",
        "llm_budget_remaining_usd gauge",
        "llm_provider_cooldown gauge",
    ):
        assert f"# TYPE {metric}" in text


async def test_registry_with_no_traffic_exposes_only_gauges(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with mix_router(tmp_path) as router:
        register(router, registry)
        names = {n for (n, _) in scrape(registry)}
    assert names == {
        "llm_budget_remaining_usd",
        "llm_budget_spent_usd",
        "llm_budget_limit_usd",
        "llm_provider_cooldown",
        "llm_provider_in_flight",
    }


async def test_a_second_registration_is_refused_and_unregister_undoes_register(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    async with mix_router(tmp_path) as router:
        metrics = register(router, registry)
        with pytest.raises(ValueError, match="llm_calls"):
            register(router, registry)
        metrics.unregister()
        assert metrics not in router.observers
        await router.complete("r", {"ticker": "ACME"})
        assert scrape(registry) == {}
        again = register(router, registry)  # the names are free again
        await router.complete("r", {"ticker": "ACME"})
        assert named(scrape(registry), "llm_calls_total") == {("none", "ok", "r"): 1}
        again.unregister()


def test_nothing_registered_means_no_observer(tmp_path: Path) -> None:
    """Until register() is called the router has no Prometheus observer on its path."""
    router = mix_router(tmp_path)
    assert not any(type(o).__name__ == "PrometheusMetrics" for o in router.observers)
