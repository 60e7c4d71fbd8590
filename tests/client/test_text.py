"""Tests for document text extraction from search hits."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from rerank_client._errors import RerankInputError
from rerank_client._text import (
    TextField,
    TextTemplate,
    as_text_template,
    extract_text,
    tokenizer_spans,
    word_spans,
)

D_REL = (
    "To descale a kettle, fill it with equal parts water and white vinegar, boil it, "
    "then rinse twice."
)
D_IRR = "The museum's east wing reopens after the roof repair."
D_MID = "Kettles collect mineral scale over time in hard-water areas."


def source_hit(source: Any) -> dict[str, Any]:
    return {"_index": "i", "_id": "x", "_score": 1.0, "_source": source}


# --- value rendering: one field "body" read from _source -----------------------

VALUE_CASES = [
    pytest.param("plain text", "plain text", id="string"),
    pytest.param("  padded  ", "  padded  ", id="string-kept-as-is"),
    pytest.param(42, "42", id="int"),
    pytest.param(-7, "-7", id="negative-int"),
    pytest.param(0, "0", id="zero"),
    pytest.param(3.5, "3.5", id="float"),
    pytest.param(42.0, "42.0", id="integral-float"),
    pytest.param(1e16, "1e+16", id="large-float"),
    pytest.param(float("nan"), None, id="nan"),
    pytest.param(float("inf"), None, id="infinity"),
    pytest.param(float("-inf"), None, id="negative-infinity"),
    pytest.param(True, "true", id="true"),
    pytest.param(False, "false", id="false"),
    pytest.param(None, None, id="null"),
    pytest.param("", None, id="empty-string"),
    pytest.param("   \n\t", None, id="whitespace-string"),
    pytest.param(["alpha kettle", "beta"], "alpha kettle beta", id="list-of-strings"),
    pytest.param([1, 2.5, True, "x"], "1 2.5 true x", id="list-of-scalars"),
    pytest.param(["a", None, "", "  ", {"en": "gamma"}, "b"], "a b", id="list-skips-no-value"),
    pytest.param([["a", ["b"]], "c"], "a b c", id="nested-lists-flattened"),
    pytest.param([], None, id="empty-list"),
    pytest.param([None, {"en": "gamma"}], None, id="list-without-values"),
    pytest.param({"en": "gamma"}, None, id="object"),
    pytest.param({}, None, id="empty-object"),
]


@pytest.mark.parametrize(("value", "expected"), VALUE_CASES)
def test_extract_text_renders_source_value(value: Any, expected: str | None) -> None:
    assert extract_text(source_hit({"body": value}), as_text_template("body")) == expected


def test_extract_text_never_writes_repr_or_none() -> None:
    values = [None, {"en": "gamma"}, [None, {"a": None}], {"a": {"b": None}}]
    template = as_text_template("body")

    for value in values:
        assert extract_text(source_hit({"body": value}), template) is None


def test_extract_text_huge_int_has_no_value() -> None:
    # Past Python's int-to-string digit limit, str(int) raises ValueError.
    hit = source_hit({"body": 10**5000})

    assert extract_text(hit, as_text_template("body")) is None


def test_extract_text_odd_values_page() -> None:
    values = [42, 3.5, True, None, ["alpha kettle", "beta"], {"en": "gamma"}, "", D_REL]
    template = as_text_template("body")

    texts = [extract_text(source_hit({"body": value}), template) for value in values]

    assert texts == ["42", "3.5", "true", None, "alpha kettle beta", None, None, D_REL]


# --- paths ---------------------------------------------------------------------

PATH_CASES = [
    pytest.param({"content": {"text": "nested"}}, "nested", id="object-path"),
    pytest.param({"content.text": "literal"}, "literal", id="literal-dotted-key"),
    pytest.param(
        {"content": [{"text": "good morning", "page": 1}, {"text": "good evening", "page": 2}]},
        "good morning good evening",
        id="array-of-objects-in-order",
    ),
    pytest.param(
        {"content": [{"text": ["a", "b"]}, {"page": 2}, {"text": "c"}]},
        "a b c",
        id="array-of-objects-with-lists-and-gaps",
    ),
    pytest.param(
        {"content": [[{"text": "deep"}], {"text": "flat"}]},
        "deep flat",
        id="nested-arrays",
    ),
    pytest.param(
        {"content": {"text": "traversed"}, "content.text": "literal"},
        "traversed",
        id="traversal-before-literal",
    ),
    pytest.param(
        {"content": {"text": None}, "content.text": "literal"},
        "literal",
        id="literal-when-traversal-has-no-text",
    ),
    pytest.param(
        {"content": {"other": "x"}, "content.text": "literal"},
        "literal",
        id="literal-when-traversal-misses",
    ),
    pytest.param({"content": "not an object"}, None, id="path-through-scalar"),
    pytest.param({"content": {"text": {"en": "gamma"}}}, None, id="path-ends-on-object"),
    pytest.param({"other": "x"}, None, id="path-missing"),
]


@pytest.mark.parametrize(("source", "expected"), PATH_CASES)
def test_extract_text_follows_dot_path(source: dict[str, Any], expected: str | None) -> None:
    assert extract_text(source_hit(source), as_text_template("content.text")) == expected


def test_extract_text_literal_key_below_top_level() -> None:
    hit = source_hit({"a": {"b.c": "mixed form"}})

    assert extract_text(hit, as_text_template("a.b.c")) == "mixed form"


def test_extract_text_dot_path_hits() -> None:
    template = as_text_template("content.text")
    sources = [
        {"content": [{"text": "good morning", "page": 1}, {"text": "good evening", "page": 2}]},
        {"content": [{"text": D_REL, "page": 1}, {"text": "see appendix", "page": 2}]},
        {"content": {"text": D_IRR}},
        {"content.text": D_MID},
    ]

    texts = [extract_text(source_hit(source), template) for source in sources]

    assert texts == [
        "good morning good evening",
        f"{D_REL} see appendix",
        D_IRR,
        D_MID,
    ]


# --- sources other than _source ------------------------------------------------

def test_extract_text_fields_only_hit() -> None:
    hit = {"_index": "i", "_id": "a", "_score": 1.2, "fields": {"title": ["Descaling a kettle with vinegar"]}}

    assert extract_text(hit, as_text_template("title")) == "Descaling a kettle with vinegar"


def test_extract_text_fields_values_joined() -> None:
    hit = {"fields": {"tags": ["kettle", "limescale", 3]}}

    assert extract_text(hit, as_text_template("tags")) == "kettle limescale 3"


def test_extract_text_fields_dotted_key() -> None:
    hit = {"_source": False, "fields": {"content.text": ["from fields"]}}

    assert extract_text(hit, as_text_template("content.text")) == "from fields"


SOURCE_FALLBACK_CASES = [
    pytest.param({"fields": {"title": ["f"]}}, "f", id="no-source"),
    pytest.param({"_source": False, "fields": {"title": ["f"]}}, "f", id="source-false"),
    pytest.param({"_source": None, "fields": {"title": ["f"]}}, "f", id="source-null"),
    pytest.param({"_source": {}, "fields": {"title": ["f"]}}, "f", id="source-empty"),
    pytest.param({"_source": {"title": None}, "fields": {"title": ["f"]}}, "f", id="source-null-value"),
    pytest.param({"_source": {"title": "s"}, "fields": {"title": ["f"]}}, "s", id="source-first"),
    pytest.param({"_index": "i", "_id": "c", "_score": 1.0}, None, id="neither"),
    pytest.param({"_source": {}}, None, id="empty-source-only"),
    pytest.param({"_source": {"title": "s"}, "fields": None}, "s", id="fields-null"),
]


@pytest.mark.parametrize(("hit", "expected"), SOURCE_FALLBACK_CASES)
def test_extract_text_source_then_fields(hit: dict[str, Any], expected: str | None) -> None:
    assert extract_text(hit, as_text_template("title")) == expected


def test_extract_text_ignores_inner_hits() -> None:
    hit = {
        "_index": "i",
        "_id": "d",
        "_score": 0.9,
        "_source": {},
        "inner_hits": {
            "parts": {
                "hits": {
                    "total": {"value": 1, "relation": "eq"},
                    "max_score": None,
                    "hits": [
                        {
                            "_index": "i",
                            "_id": "d",
                            "_nested": {"field": "parts", "offset": 0},
                            "_score": None,
                            "_source": {"title": "inner text"},
                        }
                    ],
                }
            }
        },
    }

    assert extract_text(hit, as_text_template("title")) is None


HIGHLIGHT_CASES = [
    pytest.param(
        {"highlight": {"body": ["<em>kettle</em> tips", "more <em>kettle</em>"]}},
        True,
        "<em>kettle</em> tips more <em>kettle</em>",
        id="fragments-joined",
    ),
    pytest.param(
        {"highlight": {"body": ["<em>kettle</em> tips"]}},
        False,
        None,
        id="off-by-default",
    ),
    pytest.param(
        {"_source": {"body": "source text"}, "highlight": {"body": ["fragment"]}},
        True,
        "source text",
        id="source-first",
    ),
    pytest.param(
        {"fields": {"body": ["field text"]}, "highlight": {"body": ["fragment"]}},
        True,
        "field text",
        id="fields-before-highlight",
    ),
    pytest.param({"highlight": {"body": []}}, True, None, id="no-fragments"),
]


@pytest.mark.parametrize(("hit", "use_highlight", "expected"), HIGHLIGHT_CASES)
def test_extract_text_highlight_fallback(
    hit: dict[str, Any], use_highlight: bool, expected: str | None
) -> None:
    template = TextTemplate(("body",), use_highlight=use_highlight)

    assert extract_text(hit, template) == expected


# --- several fields, prefixes and caps -------------------------------------------

def test_extract_text_joins_fields_with_separator() -> None:
    hit = source_hit({"title": "Kettles", "body": "Descale monthly."})

    assert extract_text(hit, as_text_template(["title", "body"])) == "Kettles\nDescale monthly."


def test_extract_text_skips_fields_without_text() -> None:
    hit = source_hit({"title": None, "summary": "   ", "body": "Descale monthly."})
    template = TextTemplate(("title", "summary", "body"), separator=" | ")

    assert extract_text(hit, template) == "Descale monthly."


def test_extract_text_prefix_only_with_text() -> None:
    hit = source_hit({"title": "Kettles", "body": None})
    template = TextTemplate(
        (TextField(path="title", prefix="Title: "), TextField(path="body", prefix="Body: "))
    )

    assert extract_text(hit, template) == "Title: Kettles"


def test_extract_text_field_cap_before_prefix() -> None:
    hit = source_hit({"title": "abcdefgh", "body": "0123456789"})
    template = TextTemplate(
        (
            TextField(path="title", max_chars=3, prefix="T: "),
            TextField(path="body", max_chars=4),
        ),
        separator="|",
    )

    assert extract_text(hit, template) == "T: abc|0123"


def test_extract_text_field_cap_leaving_whitespace() -> None:
    hit = source_hit({"title": "   x", "body": "b"})
    template = TextTemplate((TextField(path="title", max_chars=3, prefix="T: "), "body"))

    assert extract_text(hit, template) == "b"


def test_extract_text_template_cap_counts_everything() -> None:
    hit = source_hit({"title": "abc", "body": "defgh"})
    template = TextTemplate(
        (TextField(path="title", prefix="T: "), "body"), separator=" / ", max_chars=8
    )

    assert extract_text(hit, template) == "T: abc /"


def test_extract_text_cap_on_code_points() -> None:
    hit = source_hit({"body": "ké🫖 kettle"})
    template = TextTemplate(("body",), max_chars=3)

    assert extract_text(hit, template) == "ké🫖"


def test_extract_text_default_cap() -> None:
    hit = source_hit({"body": "x" * 25_000})

    text = extract_text(hit, as_text_template("body"))

    assert text == "x" * 20_000


def test_extract_text_does_not_mutate_hit() -> None:
    hit = {
        "_source": {"content": [{"text": "a"}, {"text": "b"}]},
        "fields": {"title": ["t"]},
        "highlight": {"body": ["h"]},
    }
    before = copy.deepcopy(hit)
    template = TextTemplate(("content.text", "title", "body"), use_highlight=True)

    extract_text(hit, template)

    assert hit == before


def test_extract_text_hit_not_mapping() -> None:
    with pytest.raises(RerankInputError, match=re.escape("A search hit must be a JSON object (a mapping), got list ['a']")):
        extract_text(["a"], as_text_template("body"))  # type: ignore[arg-type]


# --- templates ---------------------------------------------------------------

def test_as_text_template_from_path() -> None:
    assert as_text_template("body") == TextTemplate((TextField(path="body"),))


def test_as_text_template_from_sequence() -> None:
    template = as_text_template(["title", TextField(path="body", max_chars=10)])

    assert template.fields == (TextField(path="title"), TextField(path="body", max_chars=10))


def test_as_text_template_keeps_template() -> None:
    template = TextTemplate(("body",), separator=" ", max_chars=100, use_highlight=True)

    assert as_text_template(template) is template


def test_as_text_template_from_field() -> None:
    field = TextField(path="body", prefix="B: ")

    assert as_text_template(field).fields == (field,)


def test_text_template_defaults() -> None:
    template = TextTemplate(["body"])

    assert template.fields == (TextField(path="body"),)
    assert template.separator == "\n"
    assert template.max_chars == 20_000
    assert template.use_highlight is False


def test_text_template_is_hashable() -> None:
    assert hash(as_text_template(["a", "b"])) == hash(as_text_template(("a", "b")))


def test_text_field_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        TextField("body")  # type: ignore[misc]


BAD_SPEC_CASES = [
    pytest.param(
        "",
        "Invalid field path ''. A path is one or more non-empty names joined by dots, "
        "such as 'body' or 'content.text'.",
        id="empty-path",
    ),
    pytest.param(
        "  ",
        "Invalid field path '  '. A path is one or more non-empty names joined by dots, "
        "such as 'body' or 'content.text'.",
        id="blank-path",
    ),
    pytest.param(
        "content..text",
        "Invalid field path 'content..text'. A path is one or more non-empty names joined "
        "by dots, such as 'body' or 'content.text'.",
        id="empty-segment",
    ),
    pytest.param(
        ".body",
        "Invalid field path '.body'. A path is one or more non-empty names joined by dots, "
        "such as 'body' or 'content.text'.",
        id="leading-dot",
    ),
    pytest.param(
        [],
        "TextTemplate.fields is empty. Name at least one field that contains the document text.",
        id="empty-list",
    ),
    pytest.param(
        ["body", 3],
        "TextTemplate.fields[1] must be a field path or a TextField, got int 3.",
        id="non-string-field",
    ),
    pytest.param(
        b"body",
        "TextTemplate.fields must be a sequence of field paths or TextField objects, "
        "got bytes b'body'.",
        id="bytes",
    ),
    pytest.param(
        None,
        "TextTemplate.fields must be a sequence of field paths or TextField objects, "
        "got NoneType None.",
        id="none",
    ),
    pytest.param(
        {"body": 1},
        "TextTemplate.fields must be a sequence of field paths or TextField objects, "
        "got dict {'body': 1}.",
        id="mapping",
    ),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPEC_CASES)
def test_as_text_template_rejects_bad_spec(spec: Any, message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        as_text_template(spec)


def test_text_field_rejects_zero_max_chars() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextField.max_chars must be a positive integer, got 0.")):
        TextField(path="body", max_chars=0)


def test_text_field_rejects_bool_max_chars() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextField.max_chars must be a positive integer, got True.")):
        TextField(path="body", max_chars=True)


def test_text_field_rejects_non_string_prefix() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextField.prefix must be a string, got NoneType None.")):
        TextField(path="body", prefix=None)  # type: ignore[arg-type]


def test_text_field_rejects_non_string_path() -> None:
    message = "A field path must be a string such as 'body' or 'content.text', got int 7."
    with pytest.raises(RerankInputError, match=re.escape(message)):
        TextField(path=7)  # type: ignore[arg-type]


def test_text_template_rejects_negative_max_chars() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextTemplate.max_chars must be a positive integer, got -1.")):
        TextTemplate(("body",), max_chars=-1)


def test_text_template_rejects_non_string_separator() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextTemplate.separator must be a string, got NoneType None.")):
        TextTemplate(("body",), separator=None)  # type: ignore[arg-type]


def test_text_template_rejects_non_bool_highlight() -> None:
    with pytest.raises(RerankInputError, match=re.escape("TextTemplate.use_highlight must be a bool, got str 'yes'.")):
        TextTemplate(("body",), use_highlight="yes")  # type: ignore[arg-type]


def test_input_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        as_text_template("")


# -- token budgets -----------------------------------------------------------------------------------


def test_word_spans_counts_words_and_marks() -> None:
    text = "To descale a kettle, fill it."

    assert [text[start:end] for start, end in word_spans(text)] == [
        "To", "descale", "a", "kettle", ",", "fill", "it", "."
    ]


def test_token_budget_in_words() -> None:
    hit = source_hit({"title": "Kettle care", "body": D_REL})
    template = TextTemplate(
        (TextField(path="title", max_tokens=1, prefix="T: "), TextField(path="body", max_tokens=5)),
        separator="|",
    )

    assert extract_text(hit, template) == "T: Kettle|To descale a kettle,"


def test_token_budget_after_char_budget() -> None:
    hit = source_hit({"body": "alpha beta gamma delta"})
    template = TextTemplate((TextField(path="body", max_chars=8, max_tokens=3),))

    # The character cut leaves "alpha be": two tokens, under the token budget.
    assert extract_text(hit, template) == "alpha be"


def test_token_budget_keeps_short_field() -> None:
    hit = source_hit({"body": "  two words  "})
    template = TextTemplate((TextField(path="body", max_tokens=2),))

    assert extract_text(hit, template) == "  two words  "


def test_extract_text_custom_tokenizer() -> None:
    def characters(text: str) -> list[tuple[int, int]]:
        return [(position, position + 1) for position in range(len(text))]

    template = TextTemplate((TextField(path="body", max_tokens=4),), tokenizer=characters)

    assert extract_text(source_hit({"body": "kettle"}), template) == "kett"


def test_extract_text_model_token_budget(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    template = TextTemplate((TextField(path="body", max_tokens=6),), tokenizer=tokenizer_spans(tiny_model_dir))
    inside_word = TextTemplate((TextField(path="body", max_tokens=3),), tokenizer=tokenizer_spans(tiny_model_dir))
    hit = source_hit({"body": D_REL})

    text = extract_text(hit, template)
    # to · des · ##cal · ##e · a · kettle: the model's tokens end after "kettle".
    assert text == "To descale a kettle"
    model_tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert len(model_tokenizer(text, add_special_tokens=False)["input_ids"]) == 6
    assert extract_text(hit, inside_word) == "To descal"


def test_tokenizer_spans_accepts_file_path(tiny_model_dir) -> None:
    spans = tokenizer_spans(tiny_model_dir / "tokenizer.json")

    assert spans("kettle, vinegar") == [(0, 6), (6, 7), (8, 15)]


def test_tokenizer_spans_missing_file(tmp_path) -> None:
    with pytest.raises(RerankInputError, match=re.escape(f"Tokenizer file not found at {str(tmp_path / 'tokenizer.json')!r}")):
        tokenizer_spans(tmp_path)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "5"])
def test_text_field_rejects_bad_token_budget(value: object) -> None:
    with pytest.raises(RerankInputError, match=re.escape(f"TextField.max_tokens must be a positive integer, got {value!r}.")):
        TextField(path="body", max_tokens=value)  # type: ignore[arg-type]


def test_template_rejects_uncallable_tokenizer() -> None:
    with pytest.raises(RerankInputError, match="TextTemplate.tokenizer must be a function from text to token offsets"):
        TextTemplate(("body",), tokenizer="bert")  # type: ignore[arg-type]
