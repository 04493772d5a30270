"""The attribute LTR features (lref.distill.attributes) on hand-written queries and products."""

import math

import numpy as np
import pytest

from lref.data import Product
from lref.distill.attributes import (
    FEATURE_GROUPS,
    GROUP_NAMES,
    AttributeContext,
    accessory_features,
    brand_features,
    colour_features,
    negated_terms,
    negation_features,
    quantities,
    query_brands,
    select_groups,
    unit_features,
)


def prod(pid="p", title="", brand="", color="", category=(), bullets="", description=""):
    return Product(pid, title, description, bullets, brand, color, list(category))


def nan(x):
    return isinstance(x, float) and math.isnan(x)


def test_brand_named_matched_and_contradicted():
    vocab = {("ugg",), ("under", "armour"), ("armour",)}
    assert query_brands("ugg slippers women", vocab) == {("ugg",)}
    assert query_brands("under armour hoodie", vocab) == {("under", "armour")}  # the longest brand only
    named = query_brands("ugg slippers women", vocab)
    assert brand_features("ugg slippers women", prod(title="Dakota slipper", brand="UGG"), named) == {
        "brand_in_query": 1.0,
        "query_brand_contradicted": 0.0,
    }
    f = brand_features("ugg slippers women", prod(title="Fuzzy slipper", brand="Dearfoams"), named)
    assert f == {"brand_in_query": 0.0, "query_brand_contradicted": 1.0}
    f = brand_features("fuzzy slippers", prod(title="Fuzzy slipper", brand=""), set())
    assert nan(f["brand_in_query"]) and nan(f["query_brand_contradicted"])


def test_brand_vocabulary_drops_generic_colour_and_common_word_brands():
    products = {"g": prod("g", "thing", brand="Generic"), "b": prod("b", "thing", brand="Blue")}
    products |= {f"x{i}": prod(f"x{i}", f"Ring light {i}", brand=f"Maker{i}") for i in range(61)}
    products["r"] = prod("r", "Video doorbell", brand="Ring")
    products["u"] = prod("u", "Slipper", brand="UGG")
    ctx = AttributeContext.build(products)
    assert ("ugg",) in ctx.brands
    assert ("generic",) not in ctx.brands and ("blue",) not in ctx.brands
    assert ("ring",) not in ctx.brands  # in 61 titles of other brands: a common word here


def test_colour_match_and_contradiction():
    assert colour_features("red dog bowl", prod(title="Dog bowl", color="Red")) == {
        "colour_match": 1.0,
        "colour_contradicted": 0.0,
    }
    f = colour_features("mens socks black and white", prod(title="Socks, Black", color="Black"))
    assert f == {"colour_match": 0.5, "colour_contradicted": 0.0}
    assert colour_features("red dog bowl", prod(title="Dog bowl", color="Gray"))["colour_contradicted"] == 1.0
    f = colour_features("red dog bowl", prod(title="Dog bowl"))
    assert f["colour_match"] == 0.0 and nan(f["colour_contradicted"])  # no colour stated
    f = colour_features("dog bowl", prod(title="Dog bowl", color="Red"))
    assert nan(f["colour_match"]) and nan(f["colour_contradicted"])


def test_quantities_parse_and_normalise_units():
    q = dict(quantities("minglife led strip lights 5m"))
    assert q == {"length": 5.0}
    assert quantities("potassium citrate 200mg") == [("mass", pytest.approx(0.2))]
    assert quantities("1/2 inch binder") == [("length", pytest.approx(0.0127))]
    assert quantities('3/4" pvc') == [("length", pytest.approx(0.01905))]
    assert quantities("12 fl oz can") == [("volume", pytest.approx(12 * 29.5735))]
    assert quantities("8 oz jar") == [("oz", 8.0)]
    assert quantities("usb 64GB, 6-pack") == [("data", 64.0), ("count", 6.0)]
    assert quantities("pack of 4 pens") == [("count", 4.0)]
    assert quantities("airpods 2") == [] and quantities("in the box") == []


def test_units_matched_contradicted_absent():
    f = unit_features("potassium citrate 200mg", prod(title="Potassium Citrate 200 mg, 100 capsules"))
    assert f["units_matched"] == 1.0 and f["units_contradicted"] == 0.0
    f = unit_features("potassium citrate 200mg", prod(title="Potassium Citrate 99 mg"))
    assert f["units_matched"] == 0.0 and f["units_contradicted"] == 1.0
    f = unit_features("potassium citrate 200mg", prod(title="Potassium Citrate capsules"))
    assert f["units_matched"] == 0.0 and f["units_contradicted"] == 0.0  # absent: neither
    f = unit_features("led strip 5m", prod(title="LED strip 16.4ft"))  # 16.4 ft = 4.999 m
    assert f["units_matched"] == 1.0
    f = unit_features("led strip", prod(title="LED strip 5m"))
    assert nan(f["units_matched"]) and nan(f["units_contradicted"])


def test_bare_numbers_in_title():
    assert unit_features("fitbit charge 3", prod(title="Fitbit Charge 3 Fitness Tracker"))["numbers_in_title"] == 1
    assert unit_features("fitbit charge 3", prod(title="Fitbit Charge 4"))["numbers_in_title"] == 0
    assert nan(unit_features("fitbit charge", prod(title="Fitbit Charge 4"))["numbers_in_title"])


def test_negated_terms():
    assert negated_terms("1/2 pint double wall containers without lids") == ["lid"]
    assert negated_terms("bite not collar") == ["collar"]
    assert negated_terms("non-slip mat") == ["slip"]
    assert negated_terms("sugar free gum") == ["sugar"]
    assert negated_terms("watch the game not your phone tshirt") == ["phone"]
    assert negated_terms("picnic basket without accessories") == ["accessory"]
    assert negated_terms("red dog bowl") == []


def test_negation_features():
    q = "toddler water bottle without straw"
    with_straw = prod(title="Toddler water bottle with straw lid")
    f = negation_features(q, with_straw)
    assert f == {"negated_in_title": 1.0, "negated_in_text": 1.0, "negation_echoed": 0.0}
    no_straw = prod(title="Toddler water bottle, no straw, spout lid")
    assert negation_features(q, no_straw)["negation_echoed"] == 1.0
    plain = prod(title="Toddler water bottle", bullets="Replacement straws sold separately")
    assert negation_features(q, plain) == {"negated_in_title": 0.0, "negated_in_text": 1.0, "negation_echoed": 0.0}
    assert all(nan(v) for v in negation_features("water bottle", with_straw).values())


def test_accessory_features():
    f = accessory_features("airpods 2", prod(title="Silicone Case for AirPods 2, Compatible with Apple"))
    assert f == {"accessory_words": 2.0, "compat_cue": 1.0, "query_after_for": 1.0}  # case, compatible
    f = accessory_features("airpods 2", prod(title="Apple AirPods 2 with charging case"))
    assert f["accessory_words"] == 1.0 and f["compat_cue"] == 0.0 and nan(f["query_after_for"])
    f = accessory_features("dewalt tool cases", prod(title="DEWALT tool case for drills"))
    assert f["accessory_words"] == 0.0 and f["query_after_for"] == 0.0  # "case" is what the query asks for


def test_category_agreement_from_bm25_top_and_tags():
    class FakeBM25:
        def top(self, query, n):
            return ["a", "b", "c", "d"]

    cat = ["Shoes", "Women", "Slippers"]
    products = {
        "a": prod("a", "slipper", category=cat),
        "b": prod("b", "slipper", category=cat),
        "c": prod("c", "slipper", category=["Shoes", "Men", "Slippers"]),
        "d": prod("d", "sock", category=["Clothing", "Socks"]),
        "x": prod("x", "slipper rack", category=["Home", "Storage"]),
    }
    ctx = AttributeContext.build(products, None, FakeBM25(), ["ugg slippers"])
    assert ctx.category_features("ugg slippers", products["a"]) == {
        "category_agreement": 0.5,
        "root_agreement": 0.75,
    }
    assert ctx.category_features("ugg slippers", products["x"]) == {"category_agreement": 0.0, "root_agreement": 0.0}
    tags = {pid: {"product_id": pid, "topic": ["slippers"]} for pid in "abc"} | {"x": {"topic": ["slippers"]}}
    ctx = AttributeContext.build(products, tags, FakeBM25(), ["ugg slippers"])
    assert ctx.category_features("ugg slippers", products["x"])["category_agreement"] == 0.75  # tags win
    assert all(nan(v) for v in ctx.category_features("unknown query", products["a"]).values())


def test_groups_select_and_features_cover_every_name():
    assert select_groups() == GROUP_NAMES
    assert select_groups(drop=["units"]) == [g for g in GROUP_NAMES if g != "units"]
    assert select_groups(["colour", "brand"]) == ["brand", "colour"]
    with pytest.raises(ValueError, match="unknown feature group 'size'"):
        select_groups(["size"])
    ctx = AttributeContext.build({"p": prod("p", "Red mug 12 oz", brand="Acme")})
    f = ctx.features("red mug 12oz without handle", prod("p", "Red mug 12 oz", brand="Acme"), ["colour", "units"])
    assert list(f) == FEATURE_GROUPS["colour"] + FEATURE_GROUPS["units"]
    assert f["colour_match"] == 1.0 and f["units_matched"] == 1.0
    full = ctx.features("red mug", prod("p", "Red mug"))
    assert set(full) == {n for g in GROUP_NAMES for n in FEATURE_GROUPS[g]} and not np.isnan(full["colour_match"])
