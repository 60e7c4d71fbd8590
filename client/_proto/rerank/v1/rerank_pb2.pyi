from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_KIND_UNSPECIFIED: _ClassVar[ScoreKind]
    SCORE_KIND_RAW: _ClassVar[ScoreKind]
    SCORE_KIND_NORMALIZED: _ClassVar[ScoreKind]

class Truncation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_UNSPECIFIED: _ClassVar[Truncation]
    TRUNCATION_DOCUMENT_FIRST: _ClassVar[Truncation]
    TRUNCATION_LONGEST_FIRST: _ClassVar[Truncation]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_MAX: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
SCORE_KIND_UNSPECIFIED: ScoreKind
SCORE_KIND_RAW: ScoreKind
SCORE_KIND_NORMALIZED: ScoreKind
TRUNCATION_UNSPECIFIED: Truncation
TRUNCATION_DOCUMENT_FIRST: Truncation
TRUNCATION_LONGEST_FIRST: Truncation
POOLING_UNSPECIFIED: Pooling
POOLING_MAX: Pooling
POOLING_MEAN: Pooling

class Document(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "return_documents", "score_kind", "truncation", "pooling")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    top_n: int
    return_documents: bool
    score_kind: ScoreKind
    truncation: Truncation
    pooling: Pooling
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., score_kind: _Optional[_Union[ScoreKind, str]] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., pooling: _Optional[_Union[Pooling, str]] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "id", "score", "text")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    score: float
    text: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("pairs_scored", "tokens", "documents_truncated", "tokens_truncated", "queries_truncated", "cache_hits")
    PAIRS_SCORED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    pairs_scored: int
    tokens: int
    documents_truncated: int
    tokens_truncated: int
    queries_truncated: int
    cache_hits: int
    def __init__(self, pairs_scored: _Optional[int] = ..., tokens: _Optional[int] = ..., documents_truncated: _Optional[int] = ..., tokens_truncated: _Optional[int] = ..., queries_truncated: _Optional[int] = ..., cache_hits: _Optional[int] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "usage", "score_kind")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    usage: Usage
    score_kind: ScoreKind
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., score_kind: _Optional[_Union[ScoreKind, str]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_documents_per_request", "max_document_bytes", "max_request_bytes", "max_query_bytes", "max_document_chars")
    MAX_DOCUMENTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_documents_per_request: int
    max_document_bytes: int
    max_request_bytes: int
    max_query_bytes: int
    max_document_chars: int
    def __init__(self, max_documents_per_request: _Optional[int] = ..., max_document_bytes: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_query_bytes: _Optional[int] = ..., max_document_chars: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "max_length", "num_labels", "activation", "backend", "device", "model_kind", "limits", "default_truncation")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_length: int
    num_labels: int
    activation: str
    backend: str
    device: str
    model_kind: str
    limits: Limits
    default_truncation: Truncation
    def __init__(self, model: _Optional[str] = ..., max_length: _Optional[int] = ..., num_labels: _Optional[int] = ..., activation: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., model_kind: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., default_truncation: _Optional[_Union[Truncation, str]] = ...) -> None: ...
