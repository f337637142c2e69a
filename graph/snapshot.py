"""Snapshots for analysts: the rolling graph as networkx, filtered, in JSON, GraphML or GEXF.

Attributes are scalars (lists are comma-joined) so that GraphML and GEXF, which have no
list type, carry the same values as JSON, and every format reads back into an equal graph.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import networkx as nx
import orjson

from graph.rules import format_time
from graph.window import Actor, RollingGraph

__all__ = [
    "FORMATS",
    "actor_detail",
    "actor_node",
    "filtered",
    "from_node_link",
    "neighbourhood",
    "render",
    "to_networkx",
]

FORMATS = {
    "json": "application/json",
    "graphml": "application/graphml+xml",
    "gexf": "application/gexf+xml",
}


def actor_node(actor_id: str) -> str:
    return f"actor:{actor_id}"


def _victim_node(victim: str) -> str:
    return f"victim:{victim}"


def to_networkx(graphs: Iterable[RollingGraph], levels: Mapping[str, int]) -> nx.DiGraph:
    """Actors and victims as nodes, actor -> victim edges; `levels` are alert levels raised."""
    G = nx.DiGraph()
    for graph in graphs:
        for actor in graph.actors():
            _add_actor(G, actor, levels.get(actor.actor_id, 0))
    return G


def _add_actor(G: nx.DiGraph, actor: Actor, level: int) -> None:
    accounts = sorted(actor.accounts())
    regions = actor.regions()
    G.add_node(
        actor_node(actor.actor_id),
        kind="actor",
        label=accounts[0] if len(accounts) == 1 else f"{accounts[0]} +{len(accounts) - 1}",
        accounts=",".join(accounts),
        platforms=",".join(sorted({account.split(":", 1)[0] for account in accounts})),
        regions=len(regions),
        level=level,
    )
    for edge in actor.edges():
        victim = _victim_node(edge.victim)
        G.add_node(
            victim,
            kind="victim",
            label=edge.victim,
            region=edge.region,
            platform=edge.victim.split(":", 1)[0],
        )
        G.add_edge(
            actor_node(actor.actor_id),
            victim,
            region=edge.region,
            regions=",".join(sorted(edge.regions)),
            categories=",".join(sorted(edge.categories)),
            reports=len(edge.report_ids),
            first_seen=format_time(edge.first_seen),
            last_seen=format_time(edge.last_seen),
        )


def filtered(
    G: nx.DiGraph,
    region: str | None = None,
    since: datetime | None = None,
    min_regions: int | None = None,
) -> nx.DiGraph:
    """Keep edges to victims in `region`, edges last seen at or after `since`, and actors
    with at least `min_regions` regions; then drop the nodes left without edges."""
    keep = [
        (u, v)
        for u, v, data in G.edges(data=True)
        if (region is None or data["region"] == region)
        and (since is None or datetime.fromisoformat(data["last_seen"]) >= since)
        and (min_regions is None or G.nodes[u]["regions"] >= min_regions)
    ]
    result: nx.DiGraph = G.edge_subgraph(keep).copy()
    return result


def neighbourhood(G: nx.DiGraph, actor_id: str, hops: int) -> nx.DiGraph:
    """The actor, its victims (hops=1), their other actors (hops=2), and so on."""
    centre = actor_node(actor_id)
    if centre not in G:
        return nx.DiGraph()
    reach = nx.single_source_shortest_path_length(G.to_undirected(as_view=True), centre, hops)
    result: nx.DiGraph = G.subgraph(reach).copy()
    return result


def render(G: nx.DiGraph, fmt: str) -> bytes:
    if fmt == "json":
        return orjson.dumps(nx.node_link_data(G, edges="edges"))
    buffer = io.BytesIO()
    if fmt == "graphml":
        nx.write_graphml(G, buffer)
    elif fmt == "gexf":
        nx.write_gexf(G, buffer)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    return buffer.getvalue()


def from_node_link(document: Mapping[str, Any]) -> nx.DiGraph:
    G: nx.DiGraph = nx.node_link_graph(document, directed=True, edges="edges")
    return G


def actor_detail(
    graph: RollingGraph, actor_id: str, reveal: Callable[[str], str] = str
) -> dict[str, Any] | None:
    """What the API shows of one actor, or None when this graph does not know it. This is
    what a responder acts on, so offender accounts are opened with `reveal`; victims stay
    pseudonyms (graph/identity.py)."""
    onward = graph.forwarded_to(actor_id)
    actor = graph.actor(actor_id)
    if actor is None:
        return None if onward is None else {"actor_id": actor_id, "merged_into": onward}
    victims = [
        {
            "victim": edge.victim,
            "region": edge.region,
            "regions": sorted(edge.regions),
            "categories": sorted(edge.categories),
            "report_ids": sorted(f"{edge.victim.split(':', 1)[0]}:{r}" for r in edge.report_ids),
            "first_seen": format_time(edge.first_seen),
            "last_seen": format_time(edge.last_seen),
        }
        for edge in sorted(actor.edges(), key=lambda edge: edge.first_seen)
    ]
    return {
        "actor_id": actor_id,
        "accounts": sorted(reveal(account) for account in actor.accounts()),
        "regions": sorted(actor.regions()),
        "victims": victims,
        "report_ids": sorted(r for victim in victims for r in victim["report_ids"]),
        "links": [
            {"accounts": [reveal(a) for a in link.accounts], "signal": link.signal}
            for link in actor.links
        ],
        "merged_actor_ids": sorted(actor.merged),
        "shared_openers": actor.shared_openers(),
    }
