"""One TLS configuration for every outgoing HTTP client of the process.

httpx makes an SSL context for each client it constructs, even one that only ever speaks
plain http:// to an agent on the LAN, and making one reads the whole CA bundle: tens of
milliseconds of CPU. With a client per agent per process, a cluster of 32 agents spent a
quarter of its workers' time there as jobs started. Contexts are safe to share between
threads and clients.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """Certificates verified against the default CA bundle, as httpx.Client(trust_env=False) would do."""
    return httpx.create_ssl_context(trust_env=False)
