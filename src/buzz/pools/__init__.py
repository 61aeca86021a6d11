"""Upstream credential pools: which credential carries a request, and which are out of rotation.

The hold boards live in `buzz.pools.memory` (one process) and `buzz.pools.redis` (shared); the
gateway imports the Redis one only when it uses it, so the embedded default never loads redis-py.
"""
