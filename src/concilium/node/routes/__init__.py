"""The node's HTTP routes, one router per resource (as FastAPI's "bigger
applications" layout has it): :mod:`.datasets`, :mod:`.computations`,
:mod:`.audit` and the signed control-plane endpoints of :mod:`.peers`. Each
route is a thin shell over a plain function that takes the node's context
(:class:`concilium.node.context.NodeContext`), so the logic is testable without
HTTP; :mod:`.common` holds the dependencies they share."""
