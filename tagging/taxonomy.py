"""The taxonomy file: a topic tree, a flat style vocabulary and quality dimensions, in YAML.

```yaml
version: 1
thresholds: {topic: 0.35, style: 0.5}      # minimum confidence per tag type
topic:                                     # a tree; a topic tag is named by its path "A > B > C"
  - name: Home & Kitchen
    count: 1020                            # products seen under it when derived from a catalogue
    children: [{name: Furniture, children: [...]}]
style:                                     # flat, with definitions, synonyms and relations
  - {name: vintage, definition: "...", synonyms: [retro], related: [rustic], excludes: [futuristic]}
quality:                                   # dimensions with levels, best first
  - {name: title, description: "...", levels: [good, fair, poor]}
```

`build_from_products` derives the topic tree from catalogue category paths; the style vocabulary and
quality dimensions come from the shipped default (`default_taxonomy.yaml`) unless given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lref.config import ConfigError, load_yaml
from lref.rag.kg import TagGraph, tag_id

DEFAULT_PATH = Path(__file__).with_name("default_taxonomy.yaml")
SEP = " > "


@dataclass
class TopicNode:
    name: str
    children: list[TopicNode] = field(default_factory=list)
    count: int = 0
    definition: str = ""


@dataclass
class StyleTag:
    name: str
    definition: str = ""
    synonyms: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)


@dataclass
class QualityDimension:
    name: str
    levels: list[str]
    description: str = ""


@dataclass
class Taxonomy:
    topic: list[TopicNode] = field(default_factory=list)
    style: list[StyleTag] = field(default_factory=list)
    quality: list[QualityDimension] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=lambda: {"topic": 0.35, "style": 0.5})
    version: int = 1

    # ------------------------------------------------------------------ topic paths
    def topic_paths(self) -> list[tuple[str, ...]]:
        """Every node of the topic tree as its path from the root, parents before children."""
        out: list[tuple[str, ...]] = []

        def walk(nodes: list[TopicNode], prefix: tuple[str, ...]) -> None:
            for n in nodes:
                p = (*prefix, n.name)
                out.append(p)
                walk(n.children, p)

        walk(self.topic, ())
        return out

    def style_names(self) -> list[str]:
        return [s.name for s in self.style]

    # ------------------------------------------------------------------ graph
    def graph(self) -> TagGraph:
        """The knowledge graph of this taxonomy: topic is_a edges, style related_to/excludes edges."""
        kg = TagGraph()
        for path in self.topic_paths():
            tid = kg.add_tag("topic", SEP.join(path), definition=topic_text(path), level=len(path))
            if len(path) > 1:
                kg.add_relation(tid, tag_id("topic", SEP.join(path[:-1])), "is_a")
        for s in self.style:
            kg.add_tag("style", s.name, s.definition, s.synonyms)
        names = set(self.style_names())
        for s in self.style:
            for rel, others in (("related_to", s.related), ("excludes", s.excludes)):
                for o in others:
                    if o in names:
                        kg.add_relation(tag_id("style", s.name), tag_id("style", o), rel)
        for q in self.quality:
            for lvl in q.levels:
                kg.add_tag("quality", f"{q.name}:{lvl}", q.description)
        return kg

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        def node(n: TopicNode) -> dict:
            d: dict = {"name": n.name}
            if n.count:
                d["count"] = n.count
            if n.definition:
                d["definition"] = n.definition
            if n.children:
                d["children"] = [node(c) for c in n.children]
            return d

        return {
            "version": self.version,
            "thresholds": dict(self.thresholds),
            "topic": [node(n) for n in self.topic],
            "style": [
                {k: v for k, v in vars(s).items() if v or k == "name"}  # keep files short
                for s in self.style
            ],
            "quality": [{"name": q.name, "description": q.description, "levels": q.levels} for q in self.quality],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=119), encoding="utf-8"
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        return cls.from_dict(load_yaml(path), str(path))

    @classmethod
    def default(cls) -> Taxonomy:
        return cls.load(DEFAULT_PATH)

    @classmethod
    def from_dict(cls, data: dict, where: str = "taxonomy") -> Taxonomy:
        def need_list(key: str) -> list:
            v = data.get(key) or []
            if not isinstance(v, list):
                raise ConfigError(f"{where}: {key!r} must be a list")
            return v

        def topic_node(d, at: str) -> TopicNode:
            if isinstance(d, str):
                return TopicNode(d)
            if not isinstance(d, dict) or not d.get("name"):
                raise ConfigError(f"{where}: topic node at {at} needs a 'name'")
            kids = d.get("children") or []
            if not isinstance(kids, list):
                raise ConfigError(f"{where}: 'children' of topic {d['name']!r} must be a list")
            return TopicNode(
                str(d["name"]),
                [topic_node(c, f"{at} > {d['name']}") for c in kids],
                int(d.get("count", 0) or 0),
                str(d.get("definition", "") or ""),
            )

        topic = [topic_node(d, "root") for d in need_list("topic")]
        styles = []
        for i, d in enumerate(need_list("style")):
            if not isinstance(d, dict) or not d.get("name"):
                raise ConfigError(f"{where}: style entry {i} needs a 'name'")
            unknown = set(d) - {"name", "definition", "synonyms", "related", "excludes"}
            if unknown:
                raise ConfigError(f"{where}: style {d['name']!r} has unknown keys {sorted(unknown)}")
            styles.append(
                StyleTag(
                    str(d["name"]),
                    str(d.get("definition", "") or ""),
                    [str(s) for s in d.get("synonyms") or []],
                    [str(s) for s in d.get("related") or []],
                    [str(s) for s in d.get("excludes") or []],
                )
            )
        quality = []
        for i, d in enumerate(need_list("quality")):
            if not isinstance(d, dict) or not d.get("name") or not d.get("levels"):
                raise ConfigError(f"{where}: quality entry {i} needs 'name' and 'levels'")
            quality.append(
                QualityDimension(str(d["name"]), [str(x) for x in d["levels"]], str(d.get("description", "")))
            )
        thresholds = {"topic": 0.35, "style": 0.5, **(data.get("thresholds") or {})}
        return cls(topic, styles, quality, {k: float(v) for k, v in thresholds.items()}, int(data.get("version", 1)))


def topic_text(path: Iterable[str]) -> str:
    """The text a topic tag is embedded and shown as: its own name, then its full path."""
    path = list(path)
    return f"{path[-1]} ({SEP.join(path)})"


def build_from_products(
    category_paths: Iterable[list[str]], max_depth: int = 3, min_count: int = 1, base: Taxonomy | None = None
) -> Taxonomy:
    """A taxonomy whose topic tree holds every category path prefix (up to `max_depth` levels) seen at
    least `min_count` times; children are ordered by count, then name. Style and quality come from `base`
    (the shipped default when None)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for path in category_paths:
        path = [p.strip() for p in path if p and p.strip()]
        for d in range(1, min(len(path), max_depth) + 1):
            counts[tuple(path[:d])] += 1

    def children(prefix: tuple[str, ...]) -> list[TopicNode]:
        kids = [
            p for p in counts if len(p) == len(prefix) + 1 and p[: len(prefix)] == prefix and counts[p] >= min_count
        ]
        kids.sort(key=lambda p: (-counts[p], p[-1]))
        return [TopicNode(p[-1], children(p), counts[p]) for p in kids]

    base = base or Taxonomy.default()
    return Taxonomy(children(()), base.style, base.quality, dict(base.thresholds), base.version)
