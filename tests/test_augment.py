"""Augmentation (anynet.nn.augment) against NumPy references: each training image's crop and flip, the test-time
shifts, and the weights of the test-time views."""

import itertools

import numpy as np
import pytest

from anynet import backends
from anynet.backends import to_numpy
from anynet.nn.augment import augmented_scores, random_crop_flip, shift


def _crop(x, dy, dx):
    """NumPy reference: ``x`` (C, H, W) zero-padded and cropped back to its size, moved ``dy`` down, ``dx`` right."""
    C, H, W = x.shape
    p = max(abs(dy), abs(dx))
    padded = np.pad(x, ((0, 0), (p, p), (p, p)))
    return padded[:, p - dy:p - dy + H, p - dx:p - dx + W]


class _Uniform:
    """A generator with ``uniform(shape, dtype)``, as a step carries, drawing from NumPy."""

    def __init__(self, backend, seed):
        self.backend, self.rng = backend, np.random.default_rng(seed)

    def uniform(self, shape, dtype="float32"):
        return self.backend.to_device(self.rng.random(shape).astype(dtype))


@pytest.mark.parametrize(("dy", "dx"), [(1, 1), (-1, -1), (2, -3), (0, 2), (-4, 0)])
def test_shift_is_a_crop_of_the_zero_padded_image(backend_name, dy, dx):
    backend = backends.get(backend_name)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    got = to_numpy(shift(backend.to_device(x), dy, dx))
    np.testing.assert_array_equal(got, np.stack([_crop(image, dy, dx) for image in x]))


def test_shift_names_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"x must have 4 dimensions .* got shape \(2, 12\)"):
        shift(np.zeros((2, 12)), 1, 1)
    with pytest.raises(ValueError, match=r"smaller than the image \(4x5\); got dy=4, dx=0"):
        shift(np.zeros((1, 1, 4, 5)), 4, 0)


def test_each_image_gets_its_own_crop_and_flip_within_the_padding(backend_name):
    backend = backends.get(backend_name)
    N, pad = 48, 2
    x = np.random.default_rng(1).standard_normal((N, 2, 5, 5))
    got = to_numpy(random_crop_flip(backend.to_device(x), _Uniform(backend, 3), pad=pad))
    found = []
    for image, out in zip(x, got, strict=True):
        offsets = range(-pad, pad + 1)
        views = [(dy, dx, flip) for dy, dx, flip in itertools.product(offsets, offsets, (False, True))
                 if np.array_equal(out, _crop(image[..., ::-1] if flip else image, dy, dx))]
        assert views, "an image is not a crop of its padded self or its mirror"
        found.append(views[0])
    # 25 offsets and 2 mirrorings: 48 images cannot all have drawn the same.
    assert len({v[:2] for v in found}) > 5 and {v[2] for v in found} == {False, True}


@pytest.mark.parametrize(("flip", "translate"), [(False, False), (True, False), (False, True), (True, True)])
def test_test_time_views_are_weighed_as_airbench_weighs_them(backend_name, flip, translate):
    backend = backends.get(backend_name)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((32, 5))

    def reference(images):
        return images.reshape(len(images), -1) @ w

    def mirrored(images):
        out = reference(images)
        return (out + reference(images[..., ::-1])) / 2 if flip else out

    def moved(dy, dx):
        return np.stack([_crop(image, dy, dx) for image in x])

    expected = mirrored(x)
    if translate:
        expected = expected / 2 + (mirrored(moved(1, 1)) + mirrored(moved(-1, -1))) / 4
    xp = backend.xp
    w_dev = backend.to_device(w)
    got = augmented_scores(lambda images: xp.reshape(images, (images.shape[0], -1)) @ w_dev, backend.to_device(x),
                           flip, translate)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-12, atol=1e-12)
