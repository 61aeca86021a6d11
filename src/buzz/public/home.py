"""The page at `/`: what this address is, and where to go from it. Static: no key, no data."""

from __future__ import annotations

HOME_PAGE = b"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>buzz LLM gateway</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:0 .25rem;border-radius:3px}</style></head>
<body><h1>buzz</h1>
<p>This is an LLM API gateway. Point an Anthropic, OpenAI or Gemini SDK, or Claude Code, at this
address as its base URL, with a buzz key as its API key.</p>
<ul>
<li><a href="/models">Models and prices</a> that this gateway routes (<a href="/api/pricing">as JSON</a>)</li>
<li><a href="/console">Console</a>: usage and spend, for operators and for project owners</li>
<li><a href="/sh/claudecode.sh">Claude Code setup script</a>:
<code>curl -fsSL &lt;this address&gt;/sh/claudecode.sh | sh</code></li>
</ul>
<p>Documentation: <code>README.md</code> and <code>docs/</code> in the buzz source tree, or ask the
operator of this gateway.</p>
</body></html>
"""
