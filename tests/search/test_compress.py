"""The compression codecs as pure functions: int8 calibration, sign bits and Hamming, truncation and PCA."""

import numpy as np
import pytest

from embedtune.errors import ConfigError
from embedtune.search.compress import Int8Codec, Reducer, hamming, pack_bits, unpack_bits
from embedtune.search.dense import l2_normalize


def unit_rows(n: int, dims: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dims)))


def test_int8_codes_are_within_half_a_step_of_the_calibrated_values():
    vectors = unit_rows(500, 48)
    codec = Int8Codec.fit(vectors)
    codes = codec.encode(vectors)
    assert codes.dtype == np.int8 and codes.shape == vectors.shape
    assert codes.min() == -128 and codes.max() == 127  # each dimension's min and max reach the ends
    error = np.abs(codec.decode(codes) - vectors)
    assert (error <= codec.step / 2 + 1e-6).all()
    beyond = vectors * 3
    above = beyond > codec.low + 255 * codec.step
    assert above.any() and (codec.encode(beyond)[above] == 127).all()  # clipped, never wrapped
    again = Int8Codec.from_dict(codec.to_dict(), what="test")
    assert np.array_equal(again.encode(vectors), codes)


def test_bits_are_signs_and_hamming_counts_the_differing_ones():
    vectors = unit_rows(40, 77)  # not a multiple of 8: the last byte is padded
    bits = pack_bits(vectors)
    assert bits.shape == (40, 10) and bits.dtype == np.uint8
    signs = unpack_bits(bits, 77)
    assert np.allclose(np.linalg.norm(signs, axis=1), 1.0)
    assert np.array_equal(signs > 0, vectors > 0)
    expected = ((vectors[:5, None, :] > 0) != (vectors[None, :, :] > 0)).sum(axis=2)
    assert np.array_equal(hamming(bits[:5], bits), expected)


def test_truncation_keeps_the_first_dims_renormalised():
    vectors = unit_rows(20, 64)
    reducer = Reducer.fit("truncate", vectors, 16)
    assert np.allclose(reducer.apply(vectors), l2_normalize(vectors[:, :16]))
    assert reducer.stored_bytes == 0


def test_pca_finds_the_subspace_the_data_lives_in_and_round_trips():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((64, 6)))[0]  # 6 orthonormal directions in 64 dims
    vectors = (rng.standard_normal((300, 6)) @ basis.T + 0.3).astype(np.float32)  # off-centre: the mean goes
    reducer = Reducer.fit("pca", vectors, 6)
    reduced = reducer.apply(vectors)
    assert reduced.shape == (300, 6) and np.allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    # Six components hold all of the centred data: their span reconstructs it.
    centred = vectors - reducer.mean
    assert reducer.components is not None
    projected = centred @ reducer.components @ reducer.components.T
    assert np.allclose(projected, centred, atol=1e-4)
    again = Reducer.from_dict(reducer.to_dict(), what="test")
    assert np.allclose(again.apply(vectors), reduced, atol=1e-6)  # the same projection (BLAS may order sums apart)
    assert reducer.stored_bytes == (64 + 64 * 6) * 4


@pytest.mark.parametrize(
    ("kind", "n", "dims", "message"),
    [
        ("truncate", 10, 128, "vectors.dims 128 is larger than the model's 64 dims"),
        ("pca", 10, 32, "PCA to 32 dims needs at least 32 vectors"),
        ("svd", 100, 8, "vectors.reduction must be truncate | pca"),
    ],
)
def test_bad_reductions_are_one_line(kind, n, dims, message):
    with pytest.raises(ConfigError, match=message) as caught:
        Reducer.fit(kind, unit_rows(n, 64), dims)
    assert "\n" not in str(caught.value)
