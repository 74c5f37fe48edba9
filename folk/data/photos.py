"""Natural photographs for measuring the input path offline (``folk prepare photos``).

Fashion-MNIST's 28 px items decode in microseconds, so a loader measured on them says
nothing about what bounds an ImageNet run: JPEG decode of a photograph of a few hundred
pixels and its crops to 224 px. The pictures that scikit-image (``skimage.data``) and
scikit-learn (``load_sample_images``) install with themselves are photographs, and need no
download; this module turns them into a small ImageFolder tree of JPEG files:

    <data.root>/<data.train_split>/<source>/<source>_<n>.jpg    (count files in all)
    <data.root>/<data.test_split>/<source>/<source>_<n>.jpg     (a tenth as many, >= 1 a class)

one class per source picture (``SOURCES``, eight classes). File ``n`` is a random crop of
source ``n mod 8`` with an aspect of 4:3 covering 55-100 % of the largest such box, flipped
left-right half of the time, resized to 500x375 px (about an ImageNet photograph's size)
and written at JPEG quality 90. Crops and flips come from a generator seeded with
``experiment.seed``, so a (count, seed) pair always gives the same tree; ``photos.json`` in
the root records the request, and asking again for the same one writes nothing.

    folk prepare photos --config params/bench-photos.yaml [--count 200]
    folk bench --data --config params/bench-photos.yaml

``params/bench-photos.yaml`` holds the matching data keys (``data.dataset: imagefolder``,
``data.root: data/photos``, ``data.num_classes: 8``, three channels, ImageNet statistics);
any params file with those keys works, and ``--set data.root=...`` puts the tree elsewhere.
After writing, the tree is checked and given a manifest as ``folk prepare imagefolder``
does.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from folk.errors import ConfigError, DataError
from folk.utils.io import atomic_write_json

# class name -> (library, loader name); stereo_motorcycle gives (left, right, disparity)
SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "hubble": ("skimage", "hubble_deep_field"),
    "motorcycle": ("skimage", "stereo_motorcycle"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}
SIZE = (500, 375)
QUALITY = 90
MIN_AREA = 0.55
MARKER = "photos.json"
# bump when the recipe changes, so that an old tree is rewritten rather than reused
RECIPE = 1


def load_sources() -> dict:
    """class name -> RGB uint8 array of every source picture; a DataError names what is
    missing (both libraries ship these files in their wheels)."""
    out, failed = {}, []
    sklearn_images = None
    for name, (library, key) in SOURCES.items():
        try:
            if library == "skimage":
                import skimage.data  # noqa: PLC0415  in the try: a missing package is a DataError

                image = getattr(skimage.data, key)()
                if isinstance(image, tuple):
                    image = image[0]
            else:
                if sklearn_images is None:
                    from sklearn.datasets import load_sample_images  # noqa: PLC0415  as above

                    bunch = load_sample_images()
                    sklearn_images = {
                        Path(f).name: img for f, img in zip(bunch.filenames, bunch.images)
                    }
                image = sklearn_images[key]
        except Exception as exc:  # an absent optional download, a missing package
            failed.append(f"{library} '{key}' ({type(exc).__name__}: {exc})")
            continue
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3:
            failed.append(f"{library} '{key}' is not a colour picture ({image.shape})")
            continue
        out[name] = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    if failed:
        raise DataError(
            "cannot load the source photographs: "
            + "; ".join(failed)
            + " (install scikit-image and scikit-learn with their data)"
        )
    return out


def _crop_box(h: int, w: int, rng) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random 4:3 box of the picture."""
    aspect = SIZE[0] / SIZE[1]
    full_w = min(w, h * aspect)
    scale = (rng.uniform(MIN_AREA, 1.0)) ** 0.5  # of the side: area uniform in the range
    cw = max(8, int(round(full_w * scale)))
    ch = max(6, int(round(cw / aspect)))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    return left, top, left + cw, top + ch


def _render(source, rng) -> bytes:
    img = Image.fromarray(source)
    img = img.crop(_crop_box(source.shape[0], source.shape[1], rng))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.resize(SIZE, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    # no optimisation passes and no EXIF: the bytes depend only on the pixels and libjpeg
    img.save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def request(count: int, seed: int, train_split: str, test_split: str) -> dict:
    return {
        "recipe": RECIPE,
        "count": int(count),
        "test_count": test_count(count),
        "seed": int(seed),
        "size": list(SIZE),
        "quality": QUALITY,
        "classes": sorted(SOURCES),
        "splits": [train_split, test_split],
    }


def test_count(count: int) -> int:
    return max(len(SOURCES), count // 10)


def write_photos(
    root: str | Path,
    count: int = 200,
    seed: int = 0,
    train_split: str = "train",
    test_split: str = "test",
    progress=None,
) -> dict:
    """Write the photograph tree under ``root`` (module docstring); returns the request
    recorded in ``root/photos.json``. Nothing is written when the same request already is."""
    if count < len(SOURCES):
        raise ConfigError(
            f"--count {count}: the photograph tree needs at least one image "
            f"per class, {len(SOURCES)} in all"
        )
    if train_split == test_split:
        raise ConfigError(f"data.train_split and data.test_split are both '{train_split}'")
    say = progress or (lambda msg: None)
    root = Path(root)
    wanted = request(count, seed, train_split, test_split)
    marker = root / MARKER
    try:
        previous = json.loads(marker.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == wanted and all((root / s).is_dir() for s in (train_split, test_split)):
        say(
            f"photos: '{root}' already holds this tree ({count} + {wanted['test_count']} "
            f"photographs, seed {seed}); nothing to write"
        )
        return wanted
    for split in (train_split, test_split):
        # the old splits are removed below: only ever a tree this module wrote itself, never
        # a user's dataset that a params file happened to point at
        path = root / split
        if path.is_symlink() or (path.exists() and not isinstance(previous, dict)):
            raise DataError(
                f"'{path}' exists and was not written by `folk prepare photos` "
                f"(no {root / MARKER}); refusing to replace it: give the "
                "photographs a data.root of their own"
            )
    sources = load_sources()
    names = sorted(sources)
    root.mkdir(parents=True, exist_ok=True)
    # another request's files must not linger: a smaller count would leave extra images
    for split in (train_split, test_split):
        if (root / split).is_dir():
            shutil.rmtree(root / split)
    # claims the tree before writing it: a writer killed half-way leaves a marker that
    # owns the splits (the next request may replace them) but does not match any request
    atomic_write_json(marker, {**wanted, "complete": False})
    for split, n, stream in ((train_split, count, 0), (test_split, wanted["test_count"], 1)):
        # one stream per split: a split's first files stay the same whatever the counts
        rng = np.random.default_rng([seed, stream])
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = names[i % len(names)]
            # plain writes: the final marker, not each file, vouches for the tree
            (root / split / name / f"{name}_{i:05d}.jpg").write_bytes(_render(sources[name], rng))
        say(f"photos: wrote {n} photographs of {len(names)} classes to '{root / split}'")
    atomic_write_json(marker, wanted)
    return wanted
