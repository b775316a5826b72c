"""``GET /metrics``: the node's metrics in the Prometheus text format
(:mod:`concilium.node.metrics`), for a user with the role ``monitor`` (or ``admin``).

Left out of the OpenAPI document, like the control plane: it is for a Prometheus
server, not for the API's clients.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from concilium.node import metrics
from concilium.node.routes.common import Caller, Context

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics_route(request: Request, context: Context, user: Caller) -> Response:
    """Counts, sizes and times of this node (never data): see the module's docs."""
    context.users.require(user, "read_metrics")
    body = metrics.of_app(request.app.state, context).render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
