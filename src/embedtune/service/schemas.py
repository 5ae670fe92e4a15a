"""Request and response bodies, with OpenAI's field names where OpenAI has the endpoint.

``POST /v1/embeddings`` takes OpenAI's request as it is (fields it does not know, such as
``user``, are accepted and ignored) plus one optional extension, ``input_type``: ``document``
(the default) or ``query``, for models that embed queries with a prefix of their own.
``input`` token ids are cl100k_base ids (the tokenizer of OpenAI's embedding models, which
LangChain's ``OpenAIEmbeddings`` sends by default); they are decoded to text and the text is
embedded by the served model. ``usage`` counts the inputs' tokens as the served model's own
tokenizer counts them (prefix and special tokens included), not cl100k's.

``POST /v1/search`` is embedtune's own: ``query`` (one or a list), ``k``, an optional metadata
``filter`` (``{"lang": "en"}``; a list value matches any of its items); each query's hits are
what ``embedtune search --json`` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

__all__ = [
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ModelCard",
    "ModelList",
    "SearchRequest",
    "SearchResponse",
    "SearchResult",
    "Usage",
]

TokenIds = list[StrictInt]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    model: StrictStr
    dimensions: StrictInt | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = None
    input_type: Literal["document", "query"] = "document"


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr | list[StrictStr]
    k: StrictInt = 10
    filter: dict[str, Any] | None = None


class SearchResult(BaseModel):
    object: Literal["search_result"] = "search_result"
    index: int
    query: str
    hits: list[dict[str, Any]]  # Hit.to_dict(): doc_id, score, chunk_id, start, end, text, metadata


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchResult]
    model: str | None
    strategy: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedtune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
