"""Fake vendor upstreams: real HTTP servers that record the bytes they receive.

They serve the test suite, the benchmark and local trials, and are not part of the installed
package. Run one from the repository root: `python -m fakes.fake_anthropic --port 9001`.
"""
