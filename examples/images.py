"""Pre-process images in object storage in parallel: one function invocation per image.

The image case of the seed talk: raw images under a prefix must be decoded, resized and normalised
before a model (face detection with TensorFlow in the talk) can use them. The code that works on
one image runs unchanged on all of them, in parallel invocations, through the Lithops-style facade
``dask_faas.compat``: ``map`` over the prefix gives every call one object (``obj``) and a storage
client (``storage``) to write its result with.

The script makes its own set of ``--images`` PNG images of random sizes under
``images-example/<run>/raw/`` in the executor's storage, then each invocation decodes one, resizes
it to ``--size`` x ``--size`` RGB, normalises it per channel to zero mean and unit variance and
writes the float32 array (``.npy``) under ``images-example/<run>/processed/``. It prints counts and
timing, and deletes what it created unless ``--keep``.

Needs Pillow (``pip install 'dask-faas[images]'``; exit code 2 without it). Run it::

    python examples/images.py
    python examples/images.py --images 200 --size 224 --workers 4
    python examples/images.py --endpoint-url http://127.0.0.1:9000 --bucket my-bucket
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid

try:
    from PIL import Image, ImageDraw
except ImportError:
    print("examples/images.py needs Pillow: pip install 'dask-faas[images]' (or: pip install pillow)")
    sys.exit(2)

import numpy as np

import dask_faas.compat as lithops
from dask_faas import FaasExecutor


def make_image(seed: int) -> bytes:
    """A PNG of random size with a few coloured shapes on a coloured background."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(96, 640, 2))
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def preprocess(obj, storage, out_prefix, size):
    """Runs inside one invocation: decode, resize, normalise one image; write it as ``.npy``."""
    raw = obj.data_stream.read()
    with Image.open(io.BytesIO(raw)) as image:
        original = image.size
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    normalised = (pixels - pixels.mean(axis=(0, 1))) / (pixels.std(axis=(0, 1)) + 1e-6)
    buffer = io.BytesIO()
    np.save(buffer, normalised.astype(np.float32))
    key = f"{out_prefix}/{obj.name.rsplit('.', 1)[0]}.npy"
    storage.put_object(storage.bucket, key, buffer.getvalue())
    return key, original, len(raw), buffer.tell()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Decode, resize and normalise images in storage, one invocation per image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=48, help="images to make and process")
    parser.add_argument("--size", type=int, default=128, help="side of the resized images, in pixels")
    parser.add_argument("--workers", type=int, default=None, help="local pool size (default: CPU count)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint: use S3 storage (with --bucket)")
    parser.add_argument("--bucket", help="S3 bucket for the job and the images")
    parser.add_argument("--keep", action="store_true", help="keep the images and the results")
    args = parser.parse_args(argv)
    if args.images < 1 or args.size < 8:
        parser.error("need --images >= 1 and --size >= 8")
    if args.endpoint_url and not args.bucket:
        parser.error("--endpoint-url needs --bucket")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings: dict = {} if args.workers is None else {"workers": args.workers}
    if args.bucket:
        s3 = {"bucket": args.bucket, "endpoint_url": args.endpoint_url}
        settings.update(storage="s3", s3={k: v for k, v in s3.items() if v})
    run = f"images-example/{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with FaasExecutor(**settings) as ex, lithops.FunctionExecutor(executor=ex) as fexec:
        storage = ex.storage
        for i in range(args.images):
            storage.put(f"{run}/raw/img-{i:04d}.png", make_image(i))
        made = time.perf_counter()
        prefix = (
            f"s3://{storage.bucket}/{run}/raw/"
            if storage.name in ("s3", "cos")
            else f"{storage.root}/{run}/raw/"
        )
        fexec.map(preprocess, prefix, extra_args=(f"{run}/processed", args.size))
        results = fexec.get_result()
        processed = time.perf_counter()
        written = [key for key, _ in storage.list(f"{run}/processed/")]
        sample = np.load(io.BytesIO(storage.get(written[0])))
        if not args.keep:
            storage.delete_prefix(f"{run}/")

    ok = len(results) == len(written) == args.images and sample.shape == (args.size, args.size, 3)
    sizes = sorted((r[1] for r in results), key=lambda wh: wh[0] * wh[1])
    print(
        f"images     : {len(results)} PNGs under {prefix} ({sum(r[2] for r in results):,} bytes), "
        f"from {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]} pixels"
    )
    means = np.round(sample.mean(axis=(0, 1)), 6)
    print(
        f"processed  : {len(written)} arrays of {sample.shape} float32 under {run}/processed/ "
        f"({sum(r[3] for r in results):,} bytes); channel means of the first {means}"
    )
    print(f"invocations: {ex.stats['invocations']} (one per image)")
    print(
        f"timing     : making {made - started:.2f} s, processing {processed - made:.2f} s "
        f"({len(results) / (processed - made):.1f} images/s)"
    )
    if not args.keep:
        print("cleanup    : the images and the arrays were removed (--keep keeps them)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
