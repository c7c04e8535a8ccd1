"""Image variables and image bytes: sniffing, sizes, caps, per-provider token counts,
and a real PNG through the router to each wire format (loopback servers)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from router import ConfigError, Image, Message, RequestError, Router, TemplateError, Text
from router.estimate import IMAGE_TOKENS, estimate_tokens
from router.images import (
    ANTHROPIC_MAX_TOKENS,
    OLLAMA_IMAGE_TOKENS,
    OPENAI_MAX_TOKENS,
    dimensions,
    image_tokens,
    sniff,
)
from tests.imagekit import gif, jpeg, png, png_header, webp_vp8, webp_vp8l, webp_vp8x
from tests.routerkit import make_config, write_config
from tests.upstream import Upstream, replay

Factory = Callable[..., Awaitable[Upstream]]
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"
CHART = png(3, 2)
B64 = base64.b64encode(CHART).decode()


# -- sniffing and sizes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (png(3, 2), "image/png", (3, 2)),
        (png_header(4000, 3000), "image/png", (4000, 3000)),
        (jpeg(1920, 1080), "image/jpeg", (1920, 1080)),
        (gif(640, 480), "image/gif", (640, 480)),
        (webp_vp8(800, 600), "image/webp", (800, 600)),
        (webp_vp8l(1000, 16384), "image/webp", (1000, 16384)),
        (webp_vp8x(5000, 70000), "image/webp", (5000, 70000)),
    ],
)
def test_sniff_and_dimensions_per_format(data: bytes, mime: str, size: tuple[int, int]) -> None:
    assert sniff(data) == mime
    assert dimensions(data) == size


def test_jpeg_size_is_found_after_other_segments() -> None:
    """An EXIF-sized APP1 segment and a DHT (C4, not a frame) come before the SOF."""
    base = jpeg(300, 200)
    app1 = b"\xff\xe1" + (2 + 5000).to_bytes(2, "big") + b"\x00" * 5000
    dht = b"\xff\xc4" + (2 + 3).to_bytes(2, "big") + b"\x00" * 3
    data = base[:2] + app1 + dht + base[2:]
    assert dimensions(data) == (300, 200)


@pytest.mark.parametrize(
    "data", [b"hello, I am text", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x00\x01", b""]
)
def test_non_images_are_not_sniffed(data: bytes) -> None:
    assert sniff(data) is None
    assert dimensions(data) is None


# -- tokens per provider -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "openai", "anthropic"),
    [
        ((512, 512), 85 + 170, 350),  # one tile; 512*512/750 = 349.5
        ((1024, 1024), 85 + 170 * 4, 1399),  # short side to 768: 2 x 2 tiles
        ((2048, 4096), 85 + 170 * 6, 1600),  # fit 1024 x 2048, then 768 x 1536: 2 x 3
        ((200, 200), 85 + 170, 54),
        ((1568, 1568), 85 + 170 * 4, 1600),  # Anthropic's cap
        ((3000, 1000), 85 + 170 * 8, 1093),  # 2048 x 683 -> no short-side cut: 4 x 2
    ],
)
def test_image_tokens_per_provider_for_known_sizes(
    size: tuple[int, int], openai: int, anthropic: int
) -> None:
    image = Image(data=png_header(*size), mime="image/png")
    assert image_tokens("openai", image) == openai
    assert image_tokens("anthropic", image) == anthropic
    assert image_tokens("ollama", image) == OLLAMA_IMAGE_TOKENS
    assert image_tokens("mock", image) == IMAGE_TOKENS


def test_an_image_of_unknown_size_counts_each_providers_worst_case() -> None:
    url = Image(url="https://charts.example/aapl.png")
    assert image_tokens("openai", url) == OPENAI_MAX_TOKENS == 1445
    assert image_tokens("anthropic", url) == ANTHROPIC_MAX_TOKENS == 1600
    assert image_tokens("ollama", url) == OLLAMA_IMAGE_TOKENS


def test_estimate_collects_images_to_count_per_provider() -> None:
    messages = [Message("user", [Text("hi"), Image(data=CHART, mime="image/png")])]
    images: list[Image] = []
    without = estimate_tokens(messages, images=images)
    assert images == [Image(data=CHART, mime="image/png")]
    assert estimate_tokens(messages) == without + IMAGE_TOKENS


# -- an image variable through the router to each wire format ----------------------------


def three_providers_yaml(oa: str, an: str, ol: str, route_extra: str = "") -> str:
    return (
        "providers:\n"
        f"  oa:\n    kind: openai\n    base_url: {oa}/v1\n    api_key_env: IMG_KEY\n"
        f"    models: {{gpt-4o: {{price: {PRICE}}}}}\n"
        f"  an:\n    kind: anthropic\n    base_url: {an}\n    api_key_env: IMG_KEY\n"
        f"    models: {{claude-haiku-4-5: {{price: {PRICE}}}}}\n"
        f"  ol:\n    kind: ollama\n    base_url: {ol}\n    models: {{llava: {{}}}}\n"
        "routes:\n"
        + "".join(
            f"  {name}:\n    prompt: 'What does the chart show?'\n    vars: {{chart: image}}\n"
            f"    max_tokens: 50\n{route_extra}    fallback: [{step}]\n"
            for name, step in (
                ("oa", "oa/gpt-4o"),
                ("an", "an/claude-haiku-4-5"),
                ("ol", "ol/llava"),
            )
        )
    )


@pytest.fixture
async def servers(
    upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Upstream, Upstream, Upstream]:
    monkeypatch.setenv("IMG_KEY", "test-key")
    oa, an, ol = await upstream_factory(), await upstream_factory(), await upstream_factory()
    oa.route("/v1/chat/completions", replay("openai/openai-chat-200-json-wire.meta.json"))
    an.route("/v1/messages", replay("anthropic/anthropic-messages-200-json-basic.meta.json"))
    ol.route("/api/chat", replay("ollama/ollama-chat-200-json-basic.meta.json"))
    return oa, an, ol


async def test_a_png_variable_reaches_each_wire_format(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    oa, an, ol = servers
    chart = tmp_path / "chart.png"
    chart.write_bytes(CHART)
    path = write_config(tmp_path, three_providers_yaml(oa.url, an.url, ol.url))
    async with Router.from_yaml(path) as router:
        await router.complete("oa", {"chart": chart}, deadline_s=5)  # a pathlib.Path
        await router.complete("an", {"chart": str(chart)}, deadline_s=5)  # a str path
        await router.complete("ol", {"chart": CHART}, deadline_s=5)  # bytes
    assert oa.requests[0].json()["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What does the chart show?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            ],
        }
    ]
    assert an.requests[0].json()["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What does the chart show?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": B64},
                },
            ],
        }
    ]
    assert ol.requests[0].json()["messages"] == [
        {"role": "user", "content": "What does the chart show?", "images": [B64]}
    ]


async def test_an_image_url_variable_is_passed_as_it_is(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    oa, an, ol = servers
    url = "https://charts.example/aapl.png?sig=abc"
    path = write_config(tmp_path, three_providers_yaml(oa.url, an.url, ol.url))
    async with Router.from_yaml(path) as router:
        await router.complete("oa", {"chart": url}, deadline_s=5)
    assert oa.requests[0].json()["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": url},
    }


@pytest.mark.parametrize("route", ["oa", "an", "ol"])
async def test_bad_image_files_are_refused_before_any_traffic(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream], route: str
) -> None:
    oa, an, ol = servers
    big = tmp_path / "big.png"
    with big.open("wb") as f:  # 30 MB, sparse: a PNG signature, then zeros
        f.write(png_header(10, 10))
        f.truncate(30_000_000)
    text = tmp_path / "notes.png"
    text.write_text("closing prices: 101.2, 102.5\n")
    path = write_config(tmp_path, three_providers_yaml(oa.url, an.url, ol.url))
    async with Router.from_yaml(path) as router:
        with pytest.raises(TemplateError) as too_big:
            await router.complete(route, {"chart": big}, deadline_s=5)
        with pytest.raises(TemplateError) as not_image:
            await router.complete(route, {"chart": str(text)}, deadline_s=5)
        with pytest.raises(TemplateError) as missing:
            await router.complete(route, {"chart": tmp_path / "nope.png"}, deadline_s=5)
        with pytest.raises(TemplateError) as wrong_type:
            await router.complete(route, {"chart": 42}, deadline_s=5)
    assert str(too_big.value) == (
        f"route {route!r}: image variable 'chart': file {str(big)!r} is 30,000,000 bytes,"
        " over settings.max_image_bytes (20,000,000)"
    )
    assert str(not_image.value) == (
        f"route {route!r}: image variable 'chart': file {str(text)!r}: the image data is"
        " text starting 'closing pric', not a PNG, JPEG, GIF or WebP image"
    )
    assert f"file {str(tmp_path / 'nope.png')!r} does not exist" in str(missing.value)
    assert "variable 'chart' must be image (a file path, an http(s) URL or bytes), got int" in str(
        wrong_type.value
    )
    for err in (too_big, not_image, missing, wrong_type):
        assert err.value.route == route
        assert list(err.value.variables) == ["chart"]
    assert oa.requests == an.requests == ol.requests == []


async def test_the_cap_is_a_setting(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    oa, an, ol = servers
    body = three_providers_yaml(oa.url, an.url, ol.url).replace(
        "providers:\n", "settings: {max_image_bytes: 1024}\nproviders:\n", 1
    )
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        with pytest.raises(
            TemplateError, match=r"the image is 2,008 bytes, over settings.max_image_bytes"
        ):
            await router.complete("oa", {"chart": png_header(9, 9) + bytes(1975)}, deadline_s=5)
        with pytest.raises(RequestError, match=r"over settings.max_image_bytes \(1,024\)"):
            await router.complete(
                "oa",
                {"chart": CHART},
                messages=[
                    Message("user", [Image(data=png_header(9, 9) + bytes(2000), mime="image/png")])
                ],
                deadline_s=5,
            )
    assert oa.requests == []


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (Image(data=b"GIF89 is not it", mime="image/gif"), "text starting 'GIF89 is not'"),
        (Image(data=png(), mime="image/jpeg"), "mime='image/jpeg' but the bytes are image/png"),
        (Image(data=png_header(1, 1) + bytes(20_000_000), mime="image/png"), "over settings"),
    ],
)
def test_history_image_bytes_are_capped_and_sniffed(tmp_path: Path, image: Image, why: str) -> None:
    plan = make_config(
        tmp_path,
        "providers:\n  m: {kind: mock, models: {x: {}}}\nroutes:\n  chat: {fallback: [m/x]}\n",
    )
    with pytest.raises(RequestError, match=r"messages\[0\]: .*" + why.replace("(", r"\(")) as info:
        plan.render("chat", messages=[Message("user", [Text("look"), image])])
    assert info.value.index == 0


# -- load-time rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (
            "{prompt: 'Look at {{ chart }}', vars: {chart: image}, fallback: [m/x]}",
            "uses image variable 'chart' as text",
        ),
        ("{vars: {chart: image}, fallback: [m/x]}", "image variable(s) 'chart' need a prompt"),
        (
            "{prompt: 'Look', vars: {charts: 'list[image]'}, fallback: [m/x]}",
            "declare one variable per image",
        ),
    ],
)
def test_image_variable_misuse_is_a_load_error(tmp_path: Path, route: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(
            tmp_path,
            f"providers:\n  m: {{kind: mock, models: {{x: {{}}}}}}\nroutes:\n  r: {route}\n",
        )
    assert problem in str(info.value)


def test_images_follow_the_prompt_text_in_declaration_order(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {}}}
        routes:
          r:
            prompt: "Compare {{ ticker }}'s two charts."
            vars: {before: image, ticker: str, after: image}
            fallback: [m/x]
        """,
    )
    first, second = png(1, 1), gif(2, 2)
    (prompt,) = plan.render("r", {"after": second, "ticker": "AAPL", "before": first})
    assert prompt.content == [
        Text("Compare AAPL's two charts."),
        Image(data=first, mime="image/png"),
        Image(data=second, mime="image/gif"),
    ]


# -- the estimate and the budget reservation count images per provider ---------------------


def test_fit_counts_each_steps_image_formula(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        """
        providers:
          oa: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: IMG_FIT_KEY,
               models: {gpt-4o: {price: {input_per_mtok: 1, output_per_mtok: 1}}}}
          an: {kind: anthropic, base_url: "http://127.0.0.1:9", api_key_env: IMG_FIT_KEY,
               models: {claude-haiku-4-5: {price: {input_per_mtok: 1, output_per_mtok: 1}}}}
          ol: {kind: ollama, base_url: "http://127.0.0.1:9", models: {llava: {}}}
        routes:
          r:
            prompt: "Describe."
            vars: {chart: image}
            fallback: [oa/gpt-4o, an/claude-haiku-4-5, ol/llava]
        """,
        env={"IMG_FIT_KEY": "k"},
    )
    image = png_header(1024, 1024)
    text = plan.fit("r", {"chart": png(1, 1)})
    fits = plan.fit("r", {"chart": image})
    small = [f.input_tokens for f in text]
    assert [f.input_tokens for f in fits] == [
        small[0] - 255 + 765,  # OpenAI: 1 tile for 1 x 1, 4 tiles for 1024 x 1024
        small[1] - 1 + 1399,  # Anthropic: 1*1/750 rounds up to 1; 1024*1024/750
        small[2],  # Ollama: a constant
    ]


async def test_budget_reservation_counts_the_image_with_the_providers_formula(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    """$1 at $1000/M input: a 1 x 1 PNG (OpenAI: 255 tokens) fits, a 1024 x 1024 one
    (765 tokens) fits OpenAI too, but at Anthropic (1,399 tokens) it does not."""
    from router import BudgetExceededError

    oa, an, ol = servers
    body = (
        three_providers_yaml(oa.url, an.url, ol.url).replace(
            PRICE, "{input_per_mtok: 1000, output_per_mtok: 0}"
        )
        + "budgets:\n  all: {limit_usd: 1}\n"
    )
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        big = png_header(1024, 1024)
        await router.complete("oa", {"chart": big}, deadline_s=5)
        with pytest.raises(BudgetExceededError):
            await router.complete("an", {"chart": big}, deadline_s=5)
        await router.complete("an", {"chart": png(1, 1)}, deadline_s=5)
    assert len(oa.requests) == 1
    assert len(an.requests) == 1


def test_an_image_variable_is_not_an_unused_variable(tmp_path: Path) -> None:
    """An image variable is never in a template: no "declared but unused" warning."""
    from router.config import read_config

    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  mock: {kind: mock, models: {m: {}}}\n"
        "routes:\n"
        "  r:\n"
        "    prompt: 'Describe the chart.'\n"
        "    vars: {chart: image, spare: int}\n"
        "    fallback: [mock/m]\n"
    )
    (warning,) = read_config(tmp_path / "p.yaml", env={}).warnings
    assert "'spare' is declared" in warning.message


def test_an_image_variable_in_a_template_file_is_reported_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(
            tmp_path,
            "providers:\n  m: {kind: mock, models: {x: {}}}\n"
            "routes:\n  r:\n    prompt: {file: p.j2}\n    vars: {chart: image}\n"
            "    fallback: [m/x]\n",
            templates={"p.j2": "Describe:\n{{ chart }}\n"},
        )
    (problem,) = info.value.problems
    assert (problem.file.endswith("p.j2"), problem.line) == (True, 2)
    assert "template p.j2 uses image variable 'chart' as text" in problem.message


async def test_a_models_own_image_tokens_replace_the_formula(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    """gpt-4o-mini bills an image at up to 2,833 + 5,667 x 8 tokens: its
    ``image_tokens`` is what the fit, the estimate and the reservation count."""
    from router import BudgetExceededError

    oa, an, ol = servers
    body = three_providers_yaml(oa.url, an.url, ol.url).replace(
        f"{{gpt-4o: {{price: {PRICE}}}}}",
        f"{{gpt-4o: {{price: {PRICE}}}, gpt-4o-mini: {{price: {PRICE}, image_tokens: 48169}}}}",
    ) + (
        "  mini:\n    prompt: 'What does the chart show?'\n    vars: {chart: image}\n"
        "    max_tokens: 50\n    fallback: [oa/gpt-4o-mini]\n"
    )
    plan = make_config(tmp_path, body, env={"IMG_KEY": "k"})
    (formula,) = plan.fit("oa", {"chart": png(1, 1)})
    (own,) = plan.fit("mini", {"chart": png(1, 1)})
    assert own.input_tokens == formula.input_tokens - 255 + 48169
    # At $10/M input the image alone reserves $0.48 on gpt-4o-mini: over a $0.40 budget,
    # refused before any traffic; the formula's 255 tokens on gpt-4o fit.
    priced = body.replace(PRICE, "{input_per_mtok: 10, output_per_mtok: 0}")
    priced += "budgets:\n  all: {limit_usd: 0.4}\n"
    async with Router.from_yaml(write_config(tmp_path, priced)) as router:
        await router.complete("oa", {"chart": png(1, 1)}, deadline_s=5)
        with pytest.raises(BudgetExceededError):
            await router.complete("mini", {"chart": png(1, 1)}, deadline_s=5)
    assert [r.json()["model"] for r in oa.requests] == ["gpt-4o"]
