"""The cheap probe of a disabled credential: a GET of its vendor's model list with its key.

It costs nothing at any vendor and needs a valid key, so a 200 says the key is accepted again.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from buzz import providers
from buzz.config import CredentialConfig
from buzz.pools.pool import Probe


def model_list_probe(session: aiohttp.ClientSession, timeout: float = 10.0) -> Probe:
    limit = aiohttp.ClientTimeout(total=timeout)

    async def probe(provider: str, credential: CredentialConfig) -> int:
        vendor = providers.get(provider)
        url = URL(credential.base_url + vendor.models_path, encoded=True)
        headers = vendor.list_request_headers(credential.api_key)
        async with session.get(url, headers=headers, timeout=limit, allow_redirects=False) as response:
            return response.status

    return probe
