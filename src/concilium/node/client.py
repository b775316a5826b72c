"""A client of a node's HTTP API: HTTPS pinned to the node's own certificate,
an API token, and errors turned back into Concilium exceptions with the
node's message."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from concilium import errors
from concilium.errors import ConciliumError, ConfigurationError
from concilium.governance.identity import load_node

__all__ = ["NodeClient"]


class NodeClient:
    """Talks to the node in ``node_dir`` (its API address and certificate)."""

    def __init__(self, node_dir: str | Path, token: str | None, timeout: float = 30.0) -> None:
        identity = load_node(node_dir)
        context = ssl.create_default_context(cafile=str(identity.tls_certificate_path))
        context.check_hostname = False  # the certificate itself is the only trust anchor
        self.url = f"https://{identity.api_address}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # one request per command: no idle keep-alive connections to hold a node open
        self._client = httpx.Client(base_url=self.url, verify=context, headers=headers,
                                    timeout=timeout,
                                    limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._client.request(method, path, **options)
        except httpx.ConnectError:
            raise ConfigurationError(f"no node is answering at {self.url}; start it with "
                                     "'concilium node start NODE_DIR'") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": "ConciliumError", "message": response.text[:200]}
            kind = getattr(errors, str(body.get("error")), ConciliumError)
            if not (isinstance(kind, type) and issubclass(kind, ConciliumError)):
                kind = ConciliumError
            raise kind(str(body.get("message", body)))
        return response.json()
