import pytest

from lref.labels import BINARY, ESCI, LREF5, Grade, LabelError, LabelScheme, get_scheme


def test_presets_order_and_values():
    assert ESCI.labels == ["E", "S", "C", "I"] and ESCI.values == [3, 2, 1, 0]
    assert LREF5.labels == ["Exact", "Significant", "Marginal", "Trivial", "Irrelevant"]
    assert LREF5.values == [4, 3, 2, 1, 0]
    assert BINARY.labels == ["yes", "no"]
    assert get_scheme("lref5") is LREF5


def test_index_aliases_and_unknown():
    assert ESCI.index("exact") == 0 and ESCI.grade_of("C") == 1 and ESCI.label_of_value(2) == "S"
    assert BINARY.index("true") == 0
    with pytest.raises(LabelError, match="unknown label 'X'"):
        ESCI.index("X")
    with pytest.raises(LabelError, match="unknown label scheme"):
        get_scheme("nope")


def test_normalise_bounds():
    assert ESCI.normalise(3) == 1.0 and ESCI.normalise(0) == 0.0 and LREF5.normalise(2) == 0.5


def test_grades_must_descend():
    with pytest.raises(LabelError):
        LabelScheme("bad", (Grade("a", 0, "a", ""), Grade("b", 1, "b", "")))


def test_verbalizer_must_be_one_token(tiny_model):
    from lref.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    for scheme in (ESCI, LREF5, BINARY):
        ids = scheme.token_ids(tok)
        assert len(ids) == len(scheme.grades) and len(set(ids)) == len(ids)
    multi = LabelScheme("multi", (Grade("Great", 1, "Greatly relevant", ""), Grade("Bad", 0, "I", "")))
    with pytest.raises(LabelError, match="label 'Great'.*'Greatly relevant'"):
        multi.token_ids(tok)
