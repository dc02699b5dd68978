"""Patrol routes over a county road layer (GeoPackage lines): distances between stops along the roads.

The lines are cut into a graph (networkx) in a projected CRS (metres): one node per vertex (vertices closer
than 1 cm are the same node, so lines that share an end point connect), one edge per segment weighted by its
length. A stop is joined to the nearest road vertex by a straight leg; the distance between two stops is
leg + shortest path + leg (Dijkstra). Stops the network cannot connect fall back to the straight distance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cspon_rs.errors import SchemaError

__all__ = ["RoadNetwork", "load_roads", "order_by_matrix", "road_matrix"]


@dataclass
class RoadNetwork:
    """A road graph in ``crs``: ``graph`` nodes are ``(x, y)`` tuples (metres), ``xy`` their coordinates."""

    graph: Any  # networkx.Graph
    nodes: list[tuple[float, float]]
    xy: np.ndarray
    crs: Any


def load_roads(path: str | Path, crs: Any, layer: str | None = None) -> RoadNetwork:
    """Read road lines and build the graph in ``crs`` (a projected CRS in metres).

    Raises:
        SchemaError: The file has no (multi)line features.
    """
    import geopandas as gpd
    import networkx as nx

    frame = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    if frame.crs is None:
        raise SchemaError(f"{path}: the road layer has no CRS; define it (e.g. EPSG:4490) and try again")
    lines = frame.to_crs(crs).geometry.explode(index_parts=False)
    lines = lines[lines.geom_type == "LineString"]
    if lines.empty:
        raise SchemaError(f"{path}: no LineString/MultiLineString roads found; give a GPKG of road lines")
    graph = nx.Graph()
    for line in lines:
        coords = [(round(x, 2), round(y, 2)) for x, y, *_ in line.coords]
        for a, b in itertools.pairwise(coords):
            if a != b:
                graph.add_edge(a, b, weight=math.dist(a, b))
    nodes = list(graph.nodes)
    return RoadNetwork(graph=graph, nodes=nodes, xy=np.asarray(nodes, dtype=float), crs=crs)


def road_matrix(net: RoadNetwork, points: np.ndarray) -> tuple[np.ndarray, list[list[list[tuple[float, float]]]]]:
    """Distances (metres) between all ``points`` (``(n, 2)`` in ``net.crs``) over the roads, and the path of
    each pair as coordinates (stop, road vertices..., stop); unreachable pairs get the straight line."""
    import networkx as nx

    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    n = len(pts)
    near = [int(np.argmin(np.hypot(*(net.xy - p).T))) for p in pts]
    legs = [float(np.hypot(*(net.xy[k] - p))) for k, p in zip(near, pts, strict=True)]
    dist = np.zeros((n, n))
    paths: list[list[list[tuple[float, float]]]] = [[[] for _ in range(n)] for _ in range(n)]
    for i in range(n):
        lengths, routes = nx.single_source_dijkstra(net.graph, net.nodes[near[i]], weight="weight")
        for j in range(n):
            if i == j:
                continue
            target = net.nodes[near[j]]
            a, b = (float(pts[i][0]), float(pts[i][1])), (float(pts[j][0]), float(pts[j][1]))
            if target in lengths:
                dist[i, j] = legs[i] + float(lengths[target]) + legs[j]
                paths[i][j] = [a, *routes[target], b]
            else:
                dist[i, j] = math.dist(a, b)
                paths[i][j] = [a, b]
    return dist, paths


def order_by_matrix(dist: np.ndarray, *, max_passes: int = 50) -> list[int]:
    """Open route from node 0 through all others: nearest neighbour, then 2-opt, on a distance matrix.

    Returns:
        Node indices ``1..n-1`` in visiting order (node 0 is the start).
    """
    n = len(dist)
    left = set(range(1, n))
    tour = [0]
    while left:
        nxt = min(left, key=lambda k: (dist[tour[-1], k], k))
        tour.append(nxt)
        left.remove(nxt)

    def cost(t: list[int]) -> float:
        return float(sum(dist[a, b] for a, b in itertools.pairwise(t)))

    best = cost(tour)
    for _ in range(max_passes):
        improved = False
        for i in range(1, len(tour) - 1):
            for j in range(i + 1, len(tour)):
                cand = tour[:i] + tour[i:j + 1][::-1] + tour[j + 1:]
                c = cost(cand)
                if c < best - 1e-6:
                    tour, best, improved = cand, c, True
        if not improved:
            break
    return tour[1:]
