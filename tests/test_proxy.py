"""Outbound proxies: which proxy a provider uses (router.proxy, at load), that requests
really go through it (a loopback forward proxy, tests/fakeproxy.py), and that its
credentials appear nowhere: not in errors, logs, repr or health output."""

from __future__ import annotations

import base64
from io import StringIO
from pathlib import Path

import pytest

from router import ConfigError, ProviderConnectionError, Router
from router.plan import compare, load_config
from router.proxy import ProxyURLError, bypassed, choose, parse_proxy
from router.transport import Transport
from router.types import WireRequest
from router.validate import run_validate
from tests.fakeproxy import FakeProxy
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.upstream import Upstream, reply

PASSWORD = "pr0xy-s3cret-Passw0rd"
KEY = "sk-proxytest-0123456789abcdefghij"
LISTING = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def provider_yaml(base_url: str, extra: str = "", settings: str = "") -> str:
    return f"""\
settings: {{{settings}}}
providers:
  p:
    kind: openai
    base_url: {base_url}
    api_key_env: P_KEY
    allow_http: true
{extra}    models:
      m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
routes:
  r:
    prompt: "hello"
    fallback: [p/m]
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ------------------------------------------------------------------ choosing (no I/O)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        ("openai.com", "openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        ("API.OPENAI.COM", "api.openai.com", 443, True),
        ("example.com, api.openai.com:443", "api.openai.com", 443, True),
        ("api.openai.com:8443", "api.openai.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("fd00::/8", "fd12::1", 443, True),
        ("[fd12::1]:443", "fd12::1", 443, True),
        ("", "api.openai.com", 443, False),
    ],
)
def test_no_proxy_entries(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert bypassed(no_proxy, host, port) is expected


def test_the_scheme_picks_the_variable_and_lower_case_wins() -> None:
    env = {
        "HTTPS_PROXY": "http://upper:3128",
        "https_proxy": "http://lower:3128",
        "HTTP_PROXY": "http://plain:8080",
    }
    https = choose("https://api.openai.com/v1", env)
    assert https is not None and https.url == "http://lower:3128"
    assert https.source == "https_proxy"
    http = choose("http://api.example.com/v1", env)
    assert http is not None and http.url == "http://plain:8080" and http.source == "HTTP_PROXY"
    assert choose("https://api.openai.com/v1", {"HTTP_PROXY": "http://plain:8080"}) is None


def test_upper_case_http_proxy_is_ignored_under_cgi() -> None:
    """A CGI client's ``Proxy:`` header arrives as HTTP_PROXY: not trusted then."""
    env = {"HTTP_PROXY": "http://attacker:3128", "REQUEST_METHOD": "GET"}
    assert choose("http://api.example.com/v1", env) is None
    env["http_proxy"] = "http://egress:3128"
    chosen = choose("http://api.example.com/v1", env)
    assert chosen is not None and chosen.url == "http://egress:3128"
    assert choose("http://api.example.com/v1", {"HTTP_PROXY": "http://egress:3128"}) is not None


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "vllm.localhost", "LOCALHOST"]
)
def test_loopback_hosts_never_use_an_environment_proxy(host: str) -> None:
    """A proxy elsewhere would reach its own loopback: loopback is always direct."""
    env = {"HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3128"}
    assert choose(f"http://{host}:11434", env) is None
    assert choose(f"https://{host}/v1", env) is None


def test_no_proxy_applies_to_environment_proxies() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "internal.example, .corp"}
    assert choose("https://llm.internal.example/v1", env) is None
    assert choose("https://vllm.corp/v1", env) is None
    assert choose("https://api.openai.com/v1", env) is not None


def test_credentials_are_split_off_and_never_shown() -> None:
    proxy = parse_proxy(f"http://svc%40corp:{PASSWORD}@egress.corp:3128", "EGRESS")
    assert proxy.url == "http://egress.corp:3128"
    assert proxy.authorization == basic("svc@corp", PASSWORD)
    assert proxy.hostport == "egress.corp:3128"
    shown = [proxy.display(), repr(proxy), str(proxy)]
    for text in shown:
        assert PASSWORD not in text and "svc" not in text
        assert "[REDACTED]" in text and "egress.corp:3128" in text and "EGRESS" in text


def test_a_bare_host_port_is_an_http_proxy_with_its_default_port() -> None:
    assert parse_proxy("egress:3128", "V").url == "http://egress:3128"
    assert parse_proxy("https://egress", "V").url == "https://egress:443"
    assert parse_proxy("http://[fd00::1]:3128", "V").url == "http://[fd00::1]:3128"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"socks5://u:{PASSWORD}@h:1080", "only http:// and https://"),
        (f"http://u:{PASSWORD}@h:3128/path", "path, query or fragment"),
        (f"http://u:{PASSWORD}@:3128", "without a host"),
        (f"http://u:{PASSWORD}@h:99999", "not hold a valid proxy URL"),
    ],
)
def test_a_bad_proxy_url_names_the_variable_never_the_value(value: str, says: str) -> None:
    with pytest.raises(ProxyURLError) as info:
        parse_proxy(value, "CORP_PROXY")
    assert says in str(info.value) and "CORP_PROXY" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert info.value.__cause__ is None


# ------------------------------------------------------------------ the config keys


def test_the_plan_takes_the_environment_proxy_by_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, provider_yaml("https://api.example.com/v1"))
    env = {"P_KEY": KEY, "HTTPS_PROXY": f"http://u:{PASSWORD}@egress:3128"}
    proxy = load_config(path, env=env).providers["p"].proxy
    assert proxy is not None and proxy.url == "http://egress:3128"
    assert proxy.source == "HTTPS_PROXY"
    # Nothing in the plan's repr shows the credentials.
    assert PASSWORD not in repr(load_config(path, env=env))
    assert load_config(path, env={"P_KEY": KEY}).providers["p"].proxy is None


def test_trust_env_proxies_false_and_proxy_none_connect_directly(tmp_path: Path) -> None:
    env = {"P_KEY": KEY, "HTTPS_PROXY": "http://egress:3128"}
    off = write_config(
        tmp_path, provider_yaml("https://api.example.com/v1", settings="trust_env_proxies: false")
    )
    assert load_config(off, env=env).providers["p"].proxy is None
    # proxy: env on the provider overrides the setting.
    (tmp_path / "on").mkdir()
    on = write_config(
        tmp_path / "on",
        provider_yaml(
            "https://api.example.com/v1", "    proxy: env\n", settings="trust_env_proxies: false"
        ),
    )
    assert load_config(on, env=env).providers["p"].proxy is not None
    (tmp_path / "none").mkdir()
    none = write_config(
        tmp_path / "none", provider_yaml("https://api.example.com/v1", "    proxy: none\n")
    )
    assert load_config(none, env=env).providers["p"].proxy is None


def test_proxy_url_env_is_used_even_for_loopback_and_no_proxy(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, provider_yaml("http://127.0.0.1:9/v1", "    proxy_url_env: CORP_PROXY\n")
    )
    env = {"P_KEY": KEY, "CORP_PROXY": "http://egress:3128", "NO_PROXY": "*"}
    proxy = load_config(path, env=env).providers["p"].proxy
    assert proxy is not None and proxy.source == "CORP_PROXY"


def test_an_unset_proxy_variable_fails_like_a_missing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path, provider_yaml("https://api.example.com/v1", "    proxy_url_env: CORP_PROXY\n")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"P_KEY": KEY})
    (problem,) = info.value.problems
    assert problem.path == "providers.p.proxy_url_env"
    assert "CORP_PROXY is not set" in problem.message and problem.line is not None
    # Without require_env, the provider is disabled, and says which variable.
    plan = load_config(path, env={"P_KEY": KEY}, require_env=False)
    assert plan.disabled_providers == {"p"}
    monkeypatch.setenv("P_KEY", KEY)
    monkeypatch.delenv("CORP_PROXY", raising=False)
    out = StringIO()
    assert run_validate(str(path), no_env=True, out=out) == 0
    assert "disabled: p (CORP_PROXY not set)" in out.getvalue()


def test_a_bad_proxy_value_is_a_problem_at_the_key_naming_the_variable(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, provider_yaml("https://api.example.com/v1", "    proxy_url_env: CORP_PROXY\n")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"P_KEY": KEY, "CORP_PROXY": f"socks5://u:{PASSWORD}@h:1080"})
    (problem,) = info.value.problems
    assert problem.path == "providers.p.proxy_url_env" and "CORP_PROXY" in problem.message
    assert PASSWORD not in str(info.value)
    # A broken environment proxy names its variable and the way out.
    (tmp_path / "env").mkdir()
    env_path = write_config(tmp_path / "env", provider_yaml("https://api.example.com/v1"))
    with pytest.raises(ConfigError) as info:
        load_config(env_path, env={"P_KEY": KEY, "HTTPS_PROXY": f"ftp://u:{PASSWORD}@h"})
    assert "HTTPS_PROXY" in str(info.value) and "proxy: none" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_proxy_and_proxy_url_env_together_is_an_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        provider_yaml(
            "https://api.example.com/v1", "    proxy: none\n    proxy_url_env: CORP_PROXY\n"
        ),
    )
    with pytest.raises(ConfigError, match="set proxy or proxy_url_env, not both"):
        load_config(path, env={"P_KEY": KEY, "CORP_PROXY": "http://egress:3128"})


def test_a_proxy_change_is_a_provider_change_for_reload(tmp_path: Path) -> None:
    """The proxy is part of the ProviderPlan: a new proxy (or new credentials) rebuilds
    the provider's pool on reload; the same proxy keeps it."""
    path = write_config(
        tmp_path, provider_yaml("https://api.example.com/v1", "    proxy_url_env: CORP_PROXY\n")
    )
    env = {"P_KEY": KEY, "CORP_PROXY": "http://u:one-password@egress:3128"}
    old = load_config(path, env=env)
    assert compare(old, load_config(path, env=env)).providers_changed == []
    env["CORP_PROXY"] = "http://u:two-password@egress:3128"
    assert compare(old, load_config(path, env=env)).providers_changed == ["p"]


# ------------------------------------------------------------------ through a real proxy


async def test_an_http_upstream_goes_through_the_proxy_in_absolute_form(
    tmp_path: Path, upstream: Upstream
) -> None:
    """proxy_url_env with credentials: the request reaches the proxy as
    ``POST http://host:port/...`` with Proxy-Authorization; the upstream gets it
    without that header; the answer comes back."""
    upstream.route("/v1/chat/completions", reply(200, ANSWER))
    async with FakeProxy(credentials=("svc", PASSWORD)) as proxy:
        path = write_config(
            tmp_path, provider_yaml(f"{upstream.url}/v1", "    proxy_url_env: CORP_PROXY\n")
        )
        env = {"P_KEY": KEY, "CORP_PROXY": proxy.url_with("svc", PASSWORD)}
        async with Router.from_yaml(path, env=env) as router:
            result = await router.complete("r")
            shown = repr(router._providers["p"].transport)
        assert result.text == "hi"
        (seen,) = proxy.seen
        assert seen.method == "POST"
        assert seen.target == f"{upstream.url}/v1/chat/completions"
        assert seen.headers["proxy-authorization"] == basic("svc", PASSWORD)
        (got,) = upstream.requests
        assert "proxy-authorization" not in got.headers
        assert got.headers["authorization"] == f"Bearer {KEY}"
        assert PASSWORD not in shown and f"127.0.0.1:{proxy.port}" in shown


async def test_the_environment_proxy_is_used_for_a_remote_host(
    tmp_path: Path, upstream: Upstream
) -> None:
    """HTTP_PROXY from the environment: a non-loopback upstream (api.test, which only the
    proxy can resolve) is reached through it."""
    upstream.route("/v1/chat/completions", reply(200, ANSWER))
    async with FakeProxy(hosts={"api.test": "127.0.0.1"}) as proxy:
        path = write_config(tmp_path, provider_yaml(f"http://api.test:{upstream.port}/v1"))
        env = {"P_KEY": KEY, "http_proxy": proxy.url}
        async with Router.from_yaml(path, env=env) as router:
            assert (await router.complete("r")).text == "hi"
        assert [s.target for s in proxy.seen] == [
            f"http://api.test:{upstream.port}/v1/chat/completions"
        ]
        assert upstream.requests[0].headers["host"] == f"api.test:{upstream.port}"


async def test_a_loopback_upstream_bypasses_the_environment_proxy(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.route("/v1/chat/completions", reply(200, ANSWER))
    async with FakeProxy() as proxy:
        path = write_config(tmp_path, provider_yaml(f"{upstream.url}/v1"))
        env = {"P_KEY": KEY, "HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}
        async with Router.from_yaml(path, env=env) as router:
            assert (await router.complete("r")).text == "hi"
        assert proxy.seen == []
        assert len(upstream.requests) == 1


async def test_a_407_names_the_proxy_never_its_credentials(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Wrong credentials: the proxy answers 407. The error says so, names the proxy and
    the variable, and neither it nor a log line or health report carries the password."""
    wrong = "wr0ng-pr0xy-Passw0rd"
    async with FakeProxy(credentials=("svc", PASSWORD)) as proxy:
        path = write_config(
            tmp_path, provider_yaml(f"{upstream.url}/v1", "    proxy_url_env: CORP_PROXY\n")
        )
        env = {"P_KEY": KEY, "CORP_PROXY": proxy.url_with("svc", wrong)}
        with capture_logs() as logs:
            async with Router.from_yaml(path, env=env) as router:
                with pytest.raises(Exception) as info:
                    await router.complete("r")
                (report,) = await router.health()
        assert proxy.seen and upstream.requests == []
        attempt = info.value.attempts[-1]  # type: ignore[attr-defined]
        error = attempt.error
        assert isinstance(error, ProviderConnectionError) and not error.retryable
        assert "407" in str(error) and f"127.0.0.1:{proxy.port}" in str(error)
        assert "CORP_PROXY" in str(error)
        assert report.proxy is not None and "[REDACTED]" in report.proxy
        texts = [str(info.value), repr(info.value), str(error), repr(error), repr(report)]
        texts += [str(error.cause_summary), str(logs)]
        for text in texts:
            assert wrong not in text and PASSWORD not in text
            assert base64.b64encode(f"svc:{wrong}".encode()).decode() not in text


async def test_a_refused_connect_407_carries_no_credentials() -> None:
    """Wrong credentials on a CONNECT: the proxy's 407 becomes a connection error that
    names the proxy and the status, never the credentials."""
    wrong = "wr0ng-pr0xy-Passw0rd"
    async with FakeProxy(credentials=("svc", PASSWORD)) as proxy:
        transport = Transport(
            "p",
            "https://api.test/v1",
            headers={"Authorization": f"Bearer {KEY}"},
            connect_timeout_s=2.0,
            max_connections=None,
            max_response_bytes=1 << 20,
            proxy=parse_proxy(proxy.url_with("svc", wrong), "HTTPS_PROXY"),
        )
        with capture_logs() as logs:
            async with transport:
                with pytest.raises(ProviderConnectionError) as info:
                    await transport.send(WireRequest("GET", "models"), model="-", timeout_s=3.0)
        assert [s.method for s in proxy.seen] == ["CONNECT"]
        text = f"{info.value} {info.value!r} {info.value.cause_summary} {logs} {transport!r}"
        assert "407" in text and f"127.0.0.1:{proxy.port}" in text
        assert wrong not in text and base64.b64encode(f"svc:{wrong}".encode()).decode() not in text


async def test_an_https_upstream_is_tunnelled_with_connect() -> None:
    """An https upstream through a proxy: the proxy is asked to CONNECT to host:443 (with
    the credentials), sees nothing of the request; a refused tunnel is an error that
    names the upstream and the proxy, never the credentials."""
    async with FakeProxy(connect_status=403) as proxy:
        transport = Transport(
            "p",
            "https://api.test/v1",
            headers={"Authorization": f"Bearer {KEY}"},
            connect_timeout_s=2.0,
            max_connections=None,
            max_response_bytes=1 << 20,
            proxy=parse_proxy(proxy.url_with("svc", PASSWORD), "HTTPS_PROXY"),
        )
        async with transport:
            with pytest.raises(ProviderConnectionError) as info:
                await transport.send(WireRequest("GET", "models"), model="-", timeout_s=3.0)
        (seen,) = proxy.seen
        assert (seen.method, seen.target) == ("CONNECT", "api.test:443")
        assert seen.headers["proxy-authorization"] == basic("svc", PASSWORD)
        assert "authorization" not in seen.headers  # the key stays inside the tunnel
        text = f"{info.value} {info.value!r} {info.value.cause_summary}"
        assert "api.test" in text and f"via proxy 127.0.0.1:{proxy.port}" in text
        assert PASSWORD not in text and KEY not in text
