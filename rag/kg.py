"""The tag knowledge graph: tags, their relations, and which products carry which tags.

A `networkx.DiGraph` with two kinds of node:

- tag nodes, id `"<type>:<name>"` (e.g. `"topic:Home & Kitchen > Furniture"`, `"style:vintage"`), with
  attributes `kind="tag"`, `type`, `name`, `definition`, `synonyms` (list) and, for topics, `level`;
- product nodes, id `"product:<product_id>"`, with `kind="product"`.

Edges carry `rel`:
- `is_a`: child tag -> parent tag (the topic tree);
- `related_to`: between tags, stored in both directions;
- `excludes`: two tags that cannot both hold, stored in both directions;
- `tagged`: product -> tag, with `confidence`.

Saved format (`save`/`load`): one JSON object
`{"format": "lref-kg", "version": 1, "nodes": [{"id": ..., **attrs}], "edges": [{"source": ..., "target": ...,
"rel": ..., **attrs}]}`, UTF-8. It is plain node-link data, so other tools can read it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import networkx as nx

FORMAT = "lref-kg"
VERSION = 1
RELATIONS = ("is_a", "related_to", "excludes", "tagged")


def tag_id(tag_type: str, name: str) -> str:
    return f"{tag_type}:{name}"


def split_tag_id(tid: str) -> tuple[str, str]:
    t, _, name = tid.partition(":")
    return t, name


def product_node(product_id: str) -> str:
    return f"product:{product_id}"


class TagGraph:
    """Tags, relations between them, and product→tag edges."""

    def __init__(self, graph: nx.DiGraph | None = None):
        self.g = graph if graph is not None else nx.DiGraph()
        self._synonyms: dict[tuple[str, str], str] | None = None

    # ------------------------------------------------------------------ building
    def add_tag(
        self, tag_type: str, name: str, definition: str = "", synonyms: Iterable[str] = (), level: int | None = None
    ) -> str:
        tid = tag_id(tag_type, name)
        attrs = {"kind": "tag", "type": tag_type, "name": name, "definition": definition, "synonyms": list(synonyms)}
        if level is not None:
            attrs["level"] = level
        self.g.add_node(tid, **attrs)
        self._synonyms = None
        return tid

    def add_relation(self, a: str, b: str, rel: str) -> None:
        if rel not in RELATIONS or rel == "tagged":
            raise ValueError(f"unknown tag relation {rel!r}")
        for t in (a, b):
            if t not in self.g:
                raise KeyError(f"unknown tag {t!r}")
        self.g.add_edge(a, b, rel=rel)
        if rel in ("related_to", "excludes"):
            self.g.add_edge(b, a, rel=rel)

    def tag_product(self, product_id: str, tags: Mapping[str, float] | Iterable[str]) -> None:
        """Add product→tag edges (tags unknown to the graph are skipped)."""
        node = product_node(product_id)
        self.g.add_node(node, kind="product")
        items = tags.items() if isinstance(tags, Mapping) else ((t, 1.0) for t in tags)
        for t, conf in items:
            if t in self.g:
                self.g.add_edge(node, t, rel="tagged", confidence=float(conf))

    # ------------------------------------------------------------------ queries
    def tags(self, tag_type: str | None = None) -> list[str]:
        return [
            n
            for n, d in self.g.nodes(data=True)
            if d.get("kind") == "tag" and (tag_type is None or d.get("type") == tag_type)
        ]

    def node(self, tid: str) -> dict:
        return self.g.nodes[tid]

    def _out(self, tid: str, rel: str) -> list[str]:
        if tid not in self.g:
            return []
        return [v for _, v, r in self.g.out_edges(tid, data="rel") if r == rel]

    def parents(self, tid: str) -> list[str]:
        return self._out(tid, "is_a")

    def children(self, tid: str) -> list[str]:
        if tid not in self.g:
            return []
        return [u for u, _, r in self.g.in_edges(tid, data="rel") if r == "is_a"]

    def ancestors(self, tid: str) -> list[str]:
        """All tags above `tid` along is_a edges, nearest first."""
        out, frontier, seen = [], [tid], {tid}
        while frontier:
            nxt = []
            for t in frontier:
                for p in self.parents(t):
                    if p not in seen:
                        seen.add(p)
                        out.append(p)
                        nxt.append(p)
            frontier = nxt
        return out

    def related(self, tid: str) -> list[str]:
        return self._out(tid, "related_to")

    def excludes(self, tid: str) -> list[str]:
        return self._out(tid, "excludes")

    def product_tags(self, product_id: str) -> dict[str, float]:
        node = product_node(product_id)
        if node not in self.g:
            return {}
        return {v: d.get("confidence", 1.0) for _, v, d in self.g.out_edges(node, data=True) if d["rel"] == "tagged"}

    def products_with(self, tid: str) -> list[str]:
        if tid not in self.g:
            return []
        return [u.split(":", 1)[1] for u, _, r in self.g.in_edges(tid, data="rel") if r == "tagged"]

    def canonical(self, tag_type: str, name: str) -> str | None:
        """The tag id that `name` names in `tag_type`, by name or synonym (case-insensitive), or None."""
        if self._synonyms is None:
            idx: dict[tuple[str, str], str] = {}
            for tid, d in self.g.nodes(data=True):
                if d.get("kind") != "tag":
                    continue
                for s in d.get("synonyms", []):
                    idx.setdefault((d["type"], s.lower()), tid)
            for tid, d in self.g.nodes(data=True):  # names win over synonyms
                if d.get("kind") == "tag":
                    idx[(d["type"], d["name"].lower())] = tid
            self._synonyms = idx
        return self._synonyms.get((tag_type, name.strip().lower()))

    # ------------------------------------------------------------------ consistency
    def make_consistent(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Tags made consistent with the graph, keeping confidences.

        1. synonyms and aliases map to their canonical tag (keys may be ids or `type:synonym`);
        2. of two tags that exclude each other, the less confident one is dropped (ties: the first by id);
        3. every kept tag's ancestors are added, with the highest confidence of their descendants.
        """
        canon: dict[str, float] = {}
        for key, conf in scores.items():
            t, name = split_tag_id(key)
            tid = key if key in self.g else self.canonical(t, name)
            if tid is None:
                continue
            canon[tid] = max(conf, canon.get(tid, 0.0))
        kept: dict[str, float] = {}
        for tid in sorted(canon, key=lambda t: (-canon[t], t)):
            if any(x in kept for x in self.excludes(tid)):
                continue
            kept[tid] = canon[tid]
        out = dict(kept)
        for tid, conf in kept.items():
            for a in self.ancestors(tid):
                out[a] = max(out.get(a, 0.0), conf)
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        nodes = [{"id": n, **d} for n, d in self.g.nodes(data=True)]
        edges = [{"source": u, "target": v, **d} for u, v, d in self.g.edges(data=True)]
        return {"format": FORMAT, "version": VERSION, "nodes": nodes, "edges": edges}

    @classmethod
    def from_dict(cls, data: dict) -> TagGraph:
        if data.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} graph (format={data.get('format')!r})")
        g = nx.DiGraph()
        for n in data["nodes"]:
            attrs = dict(n)
            g.add_node(attrs.pop("id"), **attrs)
        for e in data["edges"]:
            attrs = dict(e)
            g.add_edge(attrs.pop("source"), attrs.pop("target"), **attrs)
        return cls(g)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TagGraph:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def merge_products(self, other: TagGraph) -> None:
        """Copy the product nodes and product→tag edges of `other` into this graph."""
        for u, v, d in other.g.edges(data=True):
            if d.get("rel") == "tagged" and v in self.g:
                self.g.add_node(u, kind="product")
                self.g.add_edge(u, v, **d)
