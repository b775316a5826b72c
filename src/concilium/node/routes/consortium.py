"""Manifest amendments over HTTP: ``GET /consortium`` (the manifest in force and its
hash), ``GET /consortium/amendments`` (every amendment this node knows, its change,
who must sign and who has), ``POST /consortium/amendments`` (propose a new
manifest; admins), ``POST /consortium/amendments/{id}/approve`` (this node's
signature; admins), and the signed peer endpoint ``POST /peer/amendments``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from concilium.governance.amendments import manifest_from_dict
from concilium.node import amendments
from concilium.node.routes.common import Caller, Context, peer_request

__all__ = ["router"]

router = APIRouter(tags=["consortium"])


class AmendmentIn(BaseModel):
    manifest: dict[str, Any]
    reason: str = ""
    revoke: str = ""


@router.get("/consortium")
def consortium_route(context: Context, user: Caller) -> dict[str, Any]:
    manifest = context.manifest
    return {"hash": None if manifest is None else manifest.hash,
            "manifest": None if manifest is None else manifest.as_dict()}


@router.get("/consortium/amendments")
def amendments_route(context: Context, user: Caller) -> list[dict[str, Any]]:
    return amendments.list_amendments(context)


@router.post("/consortium/amendments", status_code=201)
def propose_route(body: AmendmentIn, context: Context, user: Caller) -> dict[str, Any]:
    context.users.require(user, "manage_users")
    return amendments.propose_amendment(context, manifest_from_dict(body.manifest),
                                        body.reason, revoke=body.revoke)


@router.post("/consortium/amendments/{identifier}/approve")
def approve_route(identifier: str, context: Context, user: Caller) -> dict[str, Any]:
    context.users.require(user, "manage_users")
    return amendments.approve_amendment(context, identifier)


@router.post("/peer/amendments", include_in_schema=False)
async def peer_amendment(request: Request, context: Context) -> dict[str, Any]:
    node, body = await peer_request(context, request)
    return await run_in_threadpool(amendments.receive_amendment, context, node,
                                   json.loads(body))
