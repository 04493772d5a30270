"""The content tagger: retrieve candidates, let an LLM decide, make the result consistent with the graph.

For a batch of products:
1. **Candidates** (`gather`): the nearest tagged exemplars (chroma, HNSW) vote for their tags through the
   knowledge graph's product→tag edges (a topic vote also reaches every ancestor); the nearest tag
   definitions add a prior; style names and synonyms found in the product text add lexical evidence;
   `related_to` edges expand style candidates.
2. **Decision**: with `llm=None` the votes decide (topic: descend the tree while the best child keeps
   enough vote share; style: noisy-OR of the evidence). With an `Engine` (binary label scheme) each
   candidate gets one prompt "does tag T apply to this product?" and P(yes) from one forward pass,
   mixed with the retrieval vote.
3. **Consistency** (`TagGraph.make_consistent`): synonyms to canonical tags, `excludes` resolved by
   confidence, ancestors added.
4. **Calibration**: confidences pass through a per-type Platt map (`a * logit(p) + b`, identity by default)
   and a per-type threshold from the taxonomy.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lref.data import Product
from lref.rag.kg import TagGraph, split_tag_id, tag_id
from lref.rag.store import EXEMPLARS, TAGS, Hit, Store
from lref.tagging.quality import quality_tags
from lref.tagging.taxonomy import SEP, Taxonomy, topic_text

log = logging.getLogger(__name__)


@dataclass
class TaggerConfig:
    k_exemplars: int = 12
    k_tags: int = 8
    temperature: float = 0.05  # softmax temperature over exemplar similarities
    def_weight: float = 0.15  # share of the topic vote from tag-definition similarity
    max_topic_candidates: int = 3  # topics the LLM is asked about
    max_style_candidates: int = 5
    llm_weight: float = 0.7  # share of the LLM's P(yes) in the final confidence
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)  # type -> (a, b)
    text_words: int | None = None  # words of product text embedded (None: as the store was indexed)


TEXT_WORDS = 24  # words of product text embedded: title, brand, first bullets


def product_text(p: Product, max_words: int = TEXT_WORDS) -> str:
    """What is embedded for a product: title, brand, then the first bullet points (never the category)."""
    parts = [p.title.strip()]
    if p.brand:
        parts.append(f"by {p.brand.strip()}")
    text = " ".join(parts)
    if p.bullet_points and len(text.split()) < max_words:
        text += ". " + " ".join(p.bullet_points.split()[: max_words - len(text.split())])
    return text


def exemplar_tags(p: Product, tags: dict | None = None) -> tuple[list[str], list[str]]:
    """(topic path, styles) of an exemplar: from its tags row when given, else its catalogue category path."""
    if tags and tags.get("topic"):
        deepest = max(tags["topic"], key=lambda t: t.count(SEP))
        return deepest.split(SEP), list(tags.get("style") or [])
    return [c.strip() for c in p.category if c.strip()], list((tags or {}).get("style") or [])


def build_index(
    store: Store,
    taxonomy: Taxonomy,
    products: Iterable[Product],
    tags: dict[str, dict] | None = None,
    max_depth: int = 3,
    progress: bool = False,
    text_words: int = TEXT_WORDS,
) -> dict:
    """Index tag definitions and exemplar products into `store`, and save the KG (with product→tag edges)
    as `store/kg.json`. Products without topic (no tags row and no category) are skipped."""
    from tqdm.auto import tqdm

    kg = taxonomy.graph()
    tag_ids, tag_docs, tag_meta = [], [], []
    for tid in kg.tags():
        d = kg.node(tid)
        if d["type"] == "quality":
            continue
        if d["type"] == "topic":
            text = topic_text(d["name"].split(SEP))
        else:
            text = f"{d['name']}: {d['definition']} ({', '.join(d['synonyms'])})"
        tag_ids.append(tid)
        tag_docs.append(text)
        tag_meta.append({"type": d["type"], "name": d["name"]})
    store.add(TAGS, tag_ids, tag_docs, tag_meta)
    ids, texts, metas = [], [], []
    for p in products:
        path, styles = exemplar_tags(p, (tags or {}).get(p.product_id))
        path = path[:max_depth]
        if not path:
            continue
        ids.append(p.product_id)
        texts.append(product_text(p, text_words))
        metas.append({"topic": SEP.join(path), "style": "|".join(styles)})
        tids = [tag_id("topic", SEP.join(path))] + [tag_id("style", s) for s in styles]
        kg.tag_product(p.product_id, tids)
    bs = 256
    for s in tqdm(range(0, len(ids), bs), desc="indexing", unit="batch", disable=not progress):
        emb = store.embedder.encode(texts[s : s + bs])
        store.add(EXEMPLARS, ids[s : s + bs], texts[s : s + bs], metas[s : s + bs], embeddings=emb)
    kg.save(store.path / "kg.json")
    recall = {name: store.recall_at_k(name, k=10) for name in (TAGS, EXEMPLARS)}
    store.write_manifest(
        {
            "recall@10": recall,
            "n_exemplars": store.count(EXEMPLARS),
            "n_tags": store.count(TAGS),
            "text_words": text_words,
        }
    )
    log.info("indexed %d tags and %d exemplars; HNSW recall@10 vs exact: %s", len(tag_ids), len(ids), recall)
    return {"n_tags": len(tag_ids), "n_exemplars": len(ids), "recall@10": recall}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lref")
    except PackageNotFoundError:
        return "dev"


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _word_re(term: str) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])" + re.escape(term.lower()) + r"(?![a-z0-9])")


@dataclass
class Candidates:
    """Per product: vote per topic tag, style evidence, and where they came from."""

    topic: dict[str, float]
    style: dict[str, float]
    evidence: dict


class Tagger:
    def __init__(
        self,
        taxonomy: Taxonomy,
        store: Store,
        kg: TagGraph | None = None,
        engine=None,
        config: TaggerConfig | None = None,
        model_name: str | None = None,
    ):
        self.taxonomy = taxonomy
        self.store = store
        self.config = config or TaggerConfig()
        self.kg = taxonomy.graph()
        saved = (
            kg
            if kg is not None
            else (TagGraph.load(store.path / "kg.json") if (store.path / "kg.json").exists() else None)
        )
        if saved is not None:
            self.kg.merge_products(saved)
        if self.config.text_words is None:
            self.config.text_words = int(store.read_manifest().get("text_words", TEXT_WORDS))
        self.engine = engine
        if engine is not None and getattr(engine, "scheme", None) is not None and engine.scheme.name != "binary":
            raise ValueError(f"the tagger's engine must use the binary label scheme, not {engine.scheme.name!r}")
        self.model_name = model_name or ("retrieval" if engine is None else "llm")
        self.version = f"lref-{_version()}"
        self._style_terms = []
        for s in taxonomy.style:
            tid = tag_id("style", s.name)
            for term in [s.name, *s.synonyms]:
                self._style_terms.append((tid, _word_re(term)))

    # ------------------------------------------------------------------ candidates
    def gather(self, products: Sequence[Product], emb: np.ndarray | None = None) -> list[Candidates]:
        cfg = self.config
        if emb is None:
            emb = self.store.embedder.encode([product_text(p, cfg.text_words) for p in products])
        ex_hits = self.store.query(EXEMPLARS, emb, cfg.k_exemplars)
        tag_hits = self.store.query(TAGS, emb, cfg.k_tags)
        return [self._candidates(p, e, t) for p, e, t in zip(products, ex_hits, tag_hits, strict=True)]

    def _exemplar_tags(self, hit: Hit) -> list[str]:
        tags = list(self.kg.product_tags(hit.id))  # product→tag edges of the graph
        if not tags:  # an exemplar indexed after the graph was saved: its metadata
            tags = [tag_id("topic", hit.metadata.get("topic", ""))] if hit.metadata.get("topic") else []
            tags += [tag_id("style", s) for s in (hit.metadata.get("style") or "").split("|") if s]
        return tags

    def _candidates(self, p: Product, ex: list[Hit], tg: list[Hit]) -> Candidates:
        cfg = self.config
        topic: dict[str, float] = defaultdict(float)
        style: dict[str, float] = defaultdict(float)
        sources: dict[str, list[str]] = defaultdict(list)
        if ex:
            sims = np.array([h.similarity for h in ex])
            w = np.exp((sims - sims.max()) / cfg.temperature)
            w /= w.sum()
            ex_weight = 1.0 - cfg.def_weight if any(h.metadata.get("type") == "topic" for h in tg) else 1.0
            for h, wi in zip(ex, w, strict=True):
                for t in self._exemplar_tags(h):
                    kind, name = split_tag_id(t)
                    if kind == "topic":
                        for node in [t, *self.kg.ancestors(t)]:
                            topic[node] += ex_weight * wi
                    elif kind == "style":
                        style[t] += wi
                        if "exemplars" not in sources[t]:
                            sources[t].append("exemplars")
        topic_defs = [h for h in tg if h.metadata.get("type") == "topic"]
        if topic_defs:
            sims = np.array([h.similarity for h in topic_defs])
            w = np.exp((sims - sims.max()) / cfg.temperature)
            w /= w.sum()
            weight = cfg.def_weight if ex else 1.0
            for h, wi in zip(topic_defs, w, strict=True):
                for node in [h.id, *self.kg.ancestors(h.id)]:
                    topic[node] += weight * wi
        # style: lexical evidence in the product text, definition similarity, exemplar votes (noisy-OR)
        title, rest = p.title.lower(), f"{p.bullet_points} {p.description}".lower()[:2000]
        lex: dict[str, float] = {}
        for tid, rx in self._style_terms:
            if rx.search(title):
                lex[tid] = max(lex.get(tid, 0.0), 0.8)
            elif rx.search(rest):
                lex[tid] = max(lex.get(tid, 0.0), 0.45)
        defs = {h.id: h.similarity for h in tg if h.metadata.get("type") == "style"}
        cands = set(lex) | set(defs) | set(style)
        for t in list(lex):  # graph expansion over related_to
            for r in self.kg.related(t):
                if r not in cands:
                    cands.add(r)
                    sources[r].append(f"related_to {split_tag_id(t)[1]}")
        style_conf: dict[str, float] = {}
        for t in cands:
            parts = [lex.get(t, 0.0), min(style.get(t, 0.0), 0.9), max(0.0, min(0.5, (defs.get(t, 0.0) - 0.35) * 2))]
            if t in lex:
                sources[t].append("text")
            if defs.get(t, 0.0) > 0.35:
                sources[t].append(f"definition {defs[t]:.2f}")
            style_conf[t] = 1.0 - float(np.prod([1.0 - x for x in parts]))
        evidence = {
            "exemplars": [[h.id, round(h.similarity, 3)] for h in ex[:3]],
            "tag_definitions": [[h.id, round(h.similarity, 3)] for h in tg[:3]],
            "style_sources": {split_tag_id(t)[1]: v for t, v in sources.items() if style_conf.get(t, 0) > 0.05},
        }
        return Candidates(dict(topic), style_conf, evidence)

    # ------------------------------------------------------------------ decisions
    def calibrate(self, tag_type: str, p: float) -> float:
        a, b = self.config.calibration.get(tag_type, (1.0, 0.0))
        if (a, b) == (1.0, 0.0):
            return float(p)
        return 1.0 / (1.0 + math.exp(-(a * _logit(p) + b)))

    def _descend(self, topic: dict[str, float], threshold: float) -> list[tuple[str, float]]:
        """The topic path chosen by votes: at each level the best child, while its share stays >= threshold."""
        out: list[tuple[str, float]] = []
        level = [t for t in topic if not self.kg.parents(t)]
        while level:
            best = max(level, key=lambda t: (topic.get(t, 0.0), t))
            conf = self.calibrate("topic", min(1.0, topic.get(best, 0.0)))
            if conf < threshold or topic.get(best, 0.0) <= 0:
                break
            out.append((best, conf))
            level = [c for c in self.kg.children(best) if topic.get(c, 0.0) > 0]
        return out

    def _llm_probs(self, products: Sequence[Product], asks: list[list[str]]) -> list[dict[str, float]]:
        """P(yes) for each (product, candidate tag), one forward pass per pair through the engine."""
        from lref.tagging.prompts import tag_question

        prompts, index = [], []
        for i, (p, tags) in enumerate(zip(products, asks, strict=True)):
            for t in tags:
                prompts.append(tag_question(p, self.kg, t))
                index.append((i, t))
        out: list[dict[str, float]] = [{} for _ in products]
        if not prompts:
            return out
        scored = self.engine.score(prompts)
        yes = self.engine.scheme.index("yes")
        for (i, t), s in zip(index, scored, strict=True):
            out[i][t] = float(s.probs[yes])
        return out

    def tag(self, products: Sequence[Product]) -> list[dict]:
        """One tags row per product (see `tagging.batch` for the file format)."""
        cfg = self.config
        th = self.taxonomy.thresholds
        cands = self.gather(products)
        llm: list[dict[str, float]] = [{} for _ in products]
        if self.engine is not None:
            asks = []
            for c in cands:
                deepest: dict[int, list[str]] = defaultdict(list)
                for t in c.topic:
                    deepest[self.kg.node(t).get("level", 1)].append(t)
                tops = sorted(deepest.get(min(2, max(deepest, default=1)), []), key=lambda t: -c.topic[t])
                styles = sorted(c.style, key=lambda t: -c.style[t])
                asks.append(tops[: cfg.max_topic_candidates] + styles[: cfg.max_style_candidates])
            llm = self._llm_probs(products, asks)
        rows = []
        for p, c, probs in zip(products, cands, llm, strict=True):
            topic = dict(c.topic)
            style = dict(c.style)
            if probs:
                mix = lambda prior, q: (1 - cfg.llm_weight) * prior + cfg.llm_weight * q  # noqa: E731
                for t, q in probs.items():
                    if t in topic:
                        # the LLM's verdict on a topic moves the vote of that topic and its ancestors
                        delta = mix(topic[t], q) - topic[t]
                        for node in [t, *self.kg.ancestors(t)]:
                            topic[node] = max(0.0, topic[node] + delta)
                    else:
                        style[t] = mix(style.get(t, 0.0), q)
            chosen = dict(self._descend(topic, th.get("topic", 0.35)))
            for t, conf in style.items():
                conf = self.calibrate("style", conf)
                if conf >= th.get("style", 0.5):
                    chosen[t] = conf
            final = self.kg.make_consistent(chosen)
            topics = sorted(
                (t for t in final if t.startswith("topic:")), key=lambda t: self.kg.node(t).get("level", 0)
            )
            styles = sorted((t for t in final if t.startswith("style:")), key=lambda t: -final[t])
            evidence = dict(c.evidence)
            if probs:
                evidence["llm_p_yes"] = {t: round(q, 4) for t, q in probs.items()}
            rows.append(
                {
                    "product_id": p.product_id,
                    "topic": [split_tag_id(t)[1] for t in topics],
                    "style": [split_tag_id(t)[1] for t in styles],
                    "quality": quality_tags(p),
                    "confidence": {t: round(final[t], 4) for t in [*topics, *styles]},
                    "evidence": evidence,
                    "model": self.model_name,
                    "version": self.version,
                }
            )
        return rows


def holdout_ids(product_ids: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
    """The products kept out of the exemplar index: the first `round(fraction * n)` by a seeded hash,
    independent of input order."""
    import hashlib

    ids = sorted(set(product_ids), key=lambda x: hashlib.sha256(f"{seed}:{x}".encode()).hexdigest())
    return set(ids[: round(fraction * len(ids))])
