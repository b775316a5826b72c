"""Datasets (schemas and rules; never rows) and the consortium's catalog."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from concilium.data.dataset import Dataset
from concilium.data.schema import Schema
from concilium.errors import InputError
from concilium.governance import audit_events as events
from concilium.governance.proposal import DatasetRules
from concilium.governance.spec import canonical_json
from concilium.governance.users import User
from concilium.node import control
from concilium.node.context import NodeContext
from concilium.node.models import register_model
from concilium.node.routes.common import Caller, Context

__all__ = ["budget_status", "change_rules", "list_datasets", "register_dataset", "router"]

router = APIRouter(tags=["datasets"])
_LOADERS = {"csv": Dataset.from_csv, "parquet": Dataset.from_parquet}


class RulesIn(BaseModel):
    rules: dict[str, Any]  # [policy] and [approval] sections, as in the TOML file


def list_datasets(context: NodeContext) -> list[dict[str, Any]]:
    return [{"name": d.name, "rows": d.rows, "schema": d.schema, "rules": d.rules.as_dict()}
            for d in context.store.datasets()]


def register_dataset(context: NodeContext, body: dict[str, Any], user: User) -> dict[str, Any]:
    """Check every row of the file against the schema, store the dataset with its
    format and rules, log it and publish the catalog."""
    context.users.require(user, "register_dataset")
    try:
        name, path, schema = body["name"], body["path"], body["schema"]
    except KeyError as missing:
        raise InputError(f"the request needs {missing}") from None
    kind = body.get("format", "csv")
    if kind not in _LOADERS:
        raise InputError(f"format must be one of {', '.join(_LOADERS)}")
    rules = DatasetRules.from_mapping(body.get("rules") or {})
    parsed = Schema.from_mapping(schema)
    if rules.budget is not None:
        rules.budget.check_unit(parsed)
    dataset = _LOADERS[kind](name, path, parsed)
    context.store.add_dataset(name, parsed.as_mapping(), str(path), dataset.rows, rules,
                              file_format=kind)
    context.audit.record(events.DatasetRegistered(
        name, dataset.rows, kind, rules.as_dict(),
        hashlib.sha256(canonical_json(parsed.as_mapping())).hexdigest()))
    control.publish_catalog(context)
    return {"name": name, "rows": dataset.rows, "rules": rules.as_dict()}


def change_rules(context: NodeContext, name: str, mapping: dict[str, Any], user: User
                 ) -> dict[str, Any]:
    context.users.require(user, "set_policy")
    known = context.store.dataset(name)
    before = known.rules
    rules = DatasetRules.from_mapping(mapping)
    if rules.budget is not None:
        rules.budget.check_unit(Schema.from_mapping(known.schema))
    context.store.set_rules(name, rules)
    context.audit.record(events.DatasetRulesChanged(name, user.name, before.as_dict(),
                                                    rules.as_dict()))
    control.publish_catalog(context)
    return {"name": name, "rules": rules.as_dict()}


@router.get("/datasets")
def datasets_route(context: Context, user: Caller) -> list[dict[str, Any]]:
    return list_datasets(context)


@router.post("/datasets", status_code=201)
def register_route(body: dict[str, Any], context: Context, user: Caller) -> dict[str, Any]:
    return register_dataset(context, body, user)


@router.put("/datasets/{name}/rules")
def rules_route(name: str, body: RulesIn, context: Context, user: Caller) -> dict[str, Any]:
    return change_rules(context, name, body.rules, user)


def budget_status(context: NodeContext, name: str) -> dict[str, Any]:
    """A dataset's privacy budget: spent, left (rho and epsilon), its charges."""
    rules = context.store.dataset(name).rules
    if rules.budget is None or context.ledger is None:
        raise InputError(f"dataset {name!r} has no privacy budget (its rules have no "
                         "[budget] section)")
    return context.ledger.status(name, rules.budget)


@router.get("/datasets/{name}/budget")
def budget_route(name: str, context: Context, user: Caller) -> dict[str, Any]:
    return budget_status(context, name)


@router.post("/models", status_code=201)
def model_route(body: dict[str, Any], context: Context, user: Caller) -> dict[str, Any]:
    """A vendor registers a model file on this node's host (admins)."""
    context.users.require(user, "register_dataset")
    return register_model(context, str(body.get("path", "")), user.name)


@router.get("/catalog")
def catalog_route(context: Context, user: Caller) -> list[dict[str, Any]]:
    return [e.as_dict() for e in control.catalog(context)]
