"""The provider registry is the one place vendor facts live: everything else reads it."""

from __future__ import annotations

from buzz import providers
from buzz.billing.pricing import GENAI_PROVIDERS
from buzz.catalogue import BUILTIN_PATTERNS, Catalogue
from buzz.config import PROVIDERS, load
from buzz.public.catalog import models_page
from buzz.routes import Surface


def test_configuration_reads_every_vendor_from_the_registry() -> None:
    assert tuple(p.name for p in providers.REGISTRY) == PROVIDERS
    defaults = load(None, env={})
    env = {}
    for provider in providers.REGISTRY:
        assert defaults.provider(provider.name).base_url == provider.default_base_url.rstrip("/")
        assert defaults.provider(provider.name).api_key is None
        env[provider.credential_env] = f"key-{provider.name}"
        env[provider.base_url_env] = f"http://{provider.name}.test/"
    configured = load(None, env=env)
    for provider in providers.REGISTRY:
        upstream = configured.provider(provider.name)
        assert (upstream.api_key, upstream.base_url) == (f"key-{provider.name}", f"http://{provider.name}.test")


def test_routing_pricing_and_pages_read_the_registry() -> None:
    assert tuple((pattern, p.name) for p in providers.REGISTRY for pattern in p.patterns) == BUILTIN_PATTERNS
    for provider in providers.REGISTRY:
        assert GENAI_PROVIDERS[provider.name] == provider.price_id
    assert {surface: provider.name for surface, provider in providers.NATIVE.items()} == {
        Surface.ANTHROPIC.value: "anthropic",
        Surface.GEMINI.value: "google",
    }
    page = models_page(Catalogue.default().list("xai")[:1], {"data": [], "price_version": "v"}).decode()
    assert "<td>xAI</td>" in page  # the display name


def test_an_accounts_fine_tune_routes_to_openai_with_no_configuration() -> None:
    assert Catalogue.default().provider_for("ft:gpt-4.1:acme:support:xyz") == "openai"
