"""Extraction of document text from search hits.

A `TextTemplate` lists the fields whose values make up a hit's document text.
`extract_text` applies it to one hit of an OpenSearch or Elasticsearch search
response. These rules are the documented text policy of the client:

A field's value comes from the first of these sources that has text for it:

1. ``_source``, by dot path. The path is split on ``.`` and followed through
   objects. A list met on the way is mapped over, so ``content.text`` on
   ``{"content": [{"text": "a"}, {"text": "b"}]}`` yields ``a`` then ``b``, in
   list order. Where following the path finds no text, a key that contains the
   dots literally is tried next (``{"content.text": "a"}``), at any level.
2. ``fields[path]``, the arrays that OpenSearch and Elasticsearch return for
   ``fields``, ``docvalue_fields`` and ``stored_fields`` requests. This covers
   hits without ``_source`` (``_source: false``).
3. ``highlight[path]``, only when `TextTemplate.use_highlight` is set. The
   fragments are joined with one space. They keep the highlighter's markup,
   such as the default ``<em>`` tags.

How a value becomes text:

- A string is used as is.
- An integer or a finite float is written as Python's json module writes it
  (``42``, ``3.5``, ``1e+16``). NaN, infinity and integers too long for
  Python's int-to-string limit count as no value.
- A boolean is written ``true`` or ``false``.
- null counts as no value.
- A list renders each element by these rules and joins the results with one
  space. Elements with no value, and strings that are empty or whitespace
  only, are skipped. Nested lists are flattened in order.
- An object counts as no value: configure a path into it instead (for example
  ``title.en`` rather than ``title``). Rendering never produces a Python repr
  or the strings ``"None"`` and ``"null"``. Only a string value that is
  literally ``"None"`` is used as is.

How field texts become the document text:

- A field whose value is empty or whitespace only has no text and is skipped.
- `TextField.max_chars` cuts the field's text to that many characters.
- `TextField.max_tokens` then cuts it right after its first that many tokens,
  as `TextTemplate.tokenizer` finds them. The default, `word_spans`, counts
  words and punctuation marks, so a model's subword tokenizer may count more
  tokens in the same text. `tokenizer_spans` counts with the model's own
  ``tokenizer.json``; such a cut can fall inside a word.
- The field's `TextField.prefix` is then put in front of the text.
- The texts of the fields are joined with `TextTemplate.separator`, and the
  result is cut to `TextTemplate.max_chars` characters. Cuts fall on code point
  boundaries. The server then cuts the text to the model's token limit.
- A hit whose document text is empty or whitespace only has no text:
  `extract_text` returns None for it. The rerank server does not score such a
  document, and the reordered page puts its hit after every scored hit.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Union

from ._errors import RerankInputError

__all__ = [
    "TextField",
    "TextSpec",
    "TextTemplate",
    "TokenSpans",
    "as_text_template",
    "extract_text",
    "tokenizer_spans",
    "word_spans",
]

DEFAULT_MAX_CHARS = 20_000

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""A tokenizer for token budgets: takes a text, returns each token's (start, end) character offsets, in order."""

_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Split `text` into words and single punctuation marks; return their character offsets.

    BERT's basic tokenizer splits text in about the same places before it cuts
    words into subwords, so a BERT model usually counts more tokens than this.

    Example::

        >>> word_spans("Kettle, descaled.")
        [(0, 6), (6, 7), (8, 16), (16, 17)]
    """
    return [match.span() for match in _WORD_OR_MARK.finditer(text)]


def tokenizer_spans(model: str | os.PathLike[str]) -> TokenSpans:
    """Return a `TokenSpans` that counts tokens with a model's own tokenizer.

    Args:
        model: A model folder that contains ``tokenizer.json`` (what a fast
            Hugging Face tokenizer saves), or the path of that file.

    Raises:
        RerankInputError: the file is missing.
        ImportError: the ``tokenizers`` package is not installed; install
            ``rerank-sidecar[tokens]``. It does not pull torch.
    """
    path = Path(model)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise RerankInputError(
            f"Tokenizer file not found at {str(path)!r}. Pass a model folder that contains tokenizer.json, "
            "or the path of that file."
        )
    try:
        from tokenizers import Tokenizer
    except ImportError as error:
        raise ImportError(
            "tokenizer_spans needs the tokenizers package: pip install 'rerank-sidecar[tokens]'"
        ) from error
    tokenizer = Tokenizer.from_file(str(path))
    # A saved tokenizer.json can carry the padding and truncation of its last use.
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def spans(text: str) -> Sequence[tuple[int, int]]:
        return tokenizer.encode(text, add_special_tokens=False).offsets

    return spans


@dataclass(frozen=True, kw_only=True)
class TextField:
    """One field of a hit that contributes to the document text.

    Attributes:
        path: Dot path of the field, for example ``"title"`` or
            ``"content.text"``. The same string is the key in ``fields`` and
            ``highlight``.
        max_chars: Maximum number of characters taken from this field, before
            the prefix is added. None takes the whole value.
        max_tokens: Maximum number of tokens taken from this field, counted by
            the template's tokenizer after the `max_chars` cut. None takes
            every token.
        prefix: Text put in front of this field's text when the field has text,
            for example ``"Title: "``. It is counted in neither budget.
    """

    path: str
    max_chars: int | None = None
    max_tokens: int | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.max_chars is not None:
            _check_positive_int("TextField.max_chars", self.max_chars)
        if self.max_tokens is not None:
            _check_positive_int("TextField.max_tokens", self.max_tokens)
        if not isinstance(self.prefix, str):
            raise RerankInputError(
                f"TextField.prefix must be a string, got {_describe(self.prefix)}."
            )


@dataclass(frozen=True)
class TextTemplate:
    """Recipe that turns a hit into one document text.

    Attributes:
        fields: Fields in the order their texts appear in the document text.
            Plain strings are accepted and become ``TextField(path=...)``. Any
            sequence is stored as a tuple.
        separator: Text put between the texts of two fields.
        max_chars: Maximum length of the document text in characters,
            prefixes and separators included.
        use_highlight: Fall back to ``highlight[path]`` fragments when neither
            ``_source`` nor ``fields`` has text for a field.
        tokenizer: Counts tokens for `TextField.max_tokens`: `word_spans` by
            default, or ``tokenizer_spans(model_folder)`` for the model's own
            tokens.

    Example::

        TextTemplate(
            (TextField(path="title", prefix="Title: "), TextField(path="body", max_tokens=400)),
            separator="\\n",
            tokenizer=tokenizer_spans("models/my-cross-encoder"),
        )
    """

    fields: tuple[TextField, ...]
    _: KW_ONLY
    separator: str = "\n"
    max_chars: int = DEFAULT_MAX_CHARS
    use_highlight: bool = False
    tokenizer: TokenSpans = word_spans

    def __post_init__(self) -> None:
        # Frozen dataclass: normalize through object.__setattr__ so that a list
        # or a tuple of strings is accepted and the stored value is hashable.
        object.__setattr__(self, "fields", _to_fields(self.fields))
        if not isinstance(self.separator, str):
            raise RerankInputError(
                f"TextTemplate.separator must be a string, got {_describe(self.separator)}."
            )
        _check_positive_int("TextTemplate.max_chars", self.max_chars)
        if not isinstance(self.use_highlight, bool):
            raise RerankInputError(
                f"TextTemplate.use_highlight must be a bool, got {_describe(self.use_highlight)}."
            )
        if not callable(self.tokenizer):
            raise RerankInputError(
                "TextTemplate.tokenizer must be a function from text to token offsets, "
                f"got {_describe(self.tokenizer)}."
            )


TextSpec = Union[str, TextField, Sequence[Union[str, TextField]], TextTemplate]
"""Text spec a caller may pass: one path, one field, a list of them, or a template."""


def as_text_template(spec: TextSpec) -> TextTemplate:
    """Build a `TextTemplate` from the text spec a caller passed.

    Args:
        spec: A field path such as ``"body"``, a `TextField`, a sequence of
            paths and fields (joined with the default separator), or a
            `TextTemplate`, which is returned unchanged.

    Returns:
        The template, with default separator and caps unless `spec` was a
        template.

    Raises:
        RerankInputError: `spec` is empty, of another type, or contains an
            invalid path.
    """
    if isinstance(spec, TextTemplate):
        return spec
    if isinstance(spec, (str, TextField)):
        return TextTemplate((spec,))
    return TextTemplate(spec)


def extract_text(hit: Mapping[str, Any], template: TextTemplate) -> str | None:
    """Build the document text of one search hit, by the rules in this module's docstring.

    Args:
        hit: One element of a search response's ``hits.hits``. It is only read.
        template: The fields to read and how to join and cut them.

    Returns:
        The document text, at most ``template.max_chars`` characters long, or
        None when the hit has no text (no field has a value, or the text is
        empty or whitespace only).

    Raises:
        RerankInputError: `hit` is not a mapping.

    Example::

        >>> extract_text({"_source": {"body": ["alpha kettle", "beta"]}}, as_text_template("body"))
        'alpha kettle beta'
    """
    if not isinstance(hit, Mapping):
        raise RerankInputError(
            f"A search hit must be a JSON object (a mapping), got {_describe(hit)}."
        )

    parts: list[str] = []
    for field in template.fields:
        text = _read_field(hit, field.path, template.use_highlight)
        if text is None:
            continue
        if field.max_chars is not None:
            text = text[: field.max_chars]
        if field.max_tokens is not None:
            text = _cut_tokens(text, field.max_tokens, template.tokenizer)
        if _is_blank(text):
            continue
        parts.append(field.prefix + text)

    document = template.separator.join(parts)[: template.max_chars]
    if _is_blank(document):
        return None
    return document


def _cut_tokens(text: str, max_tokens: int, tokenizer: TokenSpans) -> str:
    """Cut `text` right after its `max_tokens`-th token; keep it whole when it has no more."""
    spans = tokenizer(text)
    if len(spans) <= max_tokens:
        return text
    return text[: spans[max_tokens - 1][1]]


def _read_field(hit: Mapping[str, Any], path: str, use_highlight: bool) -> str | None:
    """Return the text of one field from the first source that has any, or None."""
    source = hit.get("_source")
    if isinstance(source, Mapping):
        text = _join(_resolve(source, path.split(".")))
        if text is not None:
            return text

    fields = hit.get("fields")
    if isinstance(fields, Mapping) and path in fields:
        text = _join(_render(fields[path]))
        if text is not None:
            return text

    if use_highlight:
        highlight = hit.get("highlight")
        if isinstance(highlight, Mapping) and path in highlight:
            return _join(_render(highlight[path]))

    return None


def _resolve(node: Any, segments: Sequence[str]) -> list[str]:
    """Follow `segments` from `node` and return the rendered texts found, in order."""
    if not segments:
        return list(_render(node))

    if isinstance(node, list):
        texts: list[str] = []
        for element in node:
            texts.extend(_resolve(element, segments))
        return texts

    if not isinstance(node, Mapping):
        return []

    # Path traversal first: one segment per object level.
    if segments[0] in node:
        texts = _resolve(node[segments[0]], segments[1:])
        if texts:
            return texts

    # Literal dotted key as fallback: "a.b" as one key, then "a.b.c", and so on.
    for end in range(2, len(segments) + 1):
        key = ".".join(segments[:end])
        if key in node:
            texts = _resolve(node[key], segments[end:])
            if texts:
                return texts
    return []


def _render(value: Any) -> Iterator[str]:
    """Yield the non-blank texts of a JSON value: one for a scalar, any number for a list."""
    if isinstance(value, str):
        if not _is_blank(value):
            yield value
    elif isinstance(value, bool):
        # Checked before int, because bool is a subclass of int.
        yield "true" if value else "false"
    elif isinstance(value, int):
        # int.__repr__ ignores the __str__ of subclasses such as IntEnum. It
        # raises ValueError past Python's int-to-string digit limit (4300
        # digits by default), and such a number counts as no value.
        try:
            yield int.__repr__(value)
        except ValueError:
            return
    elif isinstance(value, float):
        # float.__repr__ is what the json module writes: 3.5, 1e+16.
        if math.isfinite(value):
            yield float.__repr__(value)
    elif isinstance(value, list):
        for element in value:
            yield from _render(element)
    # None, objects and any other type have no value.


def _join(texts: Iterable[str]) -> str | None:
    text = " ".join(texts)
    if _is_blank(text):
        return None
    return text


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


def _to_fields(fields: object) -> tuple[TextField, ...]:
    if isinstance(fields, (str, bytes, TextField)) or not isinstance(fields, Sequence):
        raise RerankInputError(
            "TextTemplate.fields must be a sequence of field paths or TextField objects, "
            f"got {_describe(fields)}."
        )
    if not fields:
        raise RerankInputError(
            "TextTemplate.fields is empty. Name at least one field that contains the document text."
        )

    converted: list[TextField] = []
    for position, field in enumerate(fields):
        if isinstance(field, TextField):
            converted.append(field)
        elif isinstance(field, str):
            converted.append(TextField(path=field))
        else:
            raise RerankInputError(
                f"TextTemplate.fields[{position}] must be a field path or a TextField, "
                f"got {_describe(field)}."
            )
    return tuple(converted)


def _check_path(path: object) -> None:
    if not isinstance(path, str):
        raise RerankInputError(
            f"A field path must be a string such as 'body' or 'content.text', "
            f"got {_describe(path)}."
        )
    if _is_blank(path) or "" in path.split("."):
        raise RerankInputError(
            f"Invalid field path {path!r}. A path is one or more non-empty names "
            "joined by dots, such as 'body' or 'content.text'."
        )


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RerankInputError(f"{name} must be a positive integer, got {value!r}.")


def _describe(value: object) -> str:
    """Return the type name and the repr of `value`, cut to 80 characters, for error messages."""
    return f"{type(value).__name__} {value!r:.80}"
