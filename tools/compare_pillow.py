"""Compare haste's decode + resize(256) + center-crop(224) with Pillow/torchvision.

    cargo run --release --example dump_pixels -- ../shared/data/imagenet-val-1300/val 20 /tmp/haste-px
    python3 tools/compare_pillow.py /tmp/haste-px       # needs pillow + numpy

Reports, per image and overall, max/mean |diff| of u8 pixels for (a) the decoded image and
(b) the final 224x224 crop, plus (c) the crop computed by Pillow from haste's decoded pixels,
which isolates the resize from JPEG decoder differences (0 means the resize is bit-exact).
haste follows Pillow 13's pass order (vertical first when the height shrinks by more than
twice as many pixels as the width); for these 227 -> 256 upscales every Pillow version agrees.
"""
import sys, os
import numpy as np
from PIL import Image

def tv_resize_crop(img, size=256, crop=224):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))

d = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(d, "list.tsv"))]
stats = {"decode": [], "crop": [], "resize_only": []}
for i, (path, w, h) in enumerate(rows):
    w, h = int(w), int(h)
    ours_dec = np.fromfile(os.path.join(d, f"{i}.decoded"), np.uint8).reshape(h, w, 3).astype(int)
    ours_crop = np.fromfile(os.path.join(d, f"{i}.crop"), np.uint8).reshape(224, 224, 3).astype(int)
    pil = Image.open(path).convert("RGB")
    pil_dec = np.asarray(pil).astype(int)
    pil_crop = tv_resize_crop(pil).astype(int)
    same_input = tv_resize_crop(Image.fromarray(ours_dec.astype(np.uint8), "RGB")).astype(int)
    for k, a, b in (("decode", ours_dec, pil_dec), ("crop", ours_crop, pil_crop), ("resize_only", ours_crop, same_input)):
        diff = np.abs(a - b)
        stats[k].append((diff.max(), diff.mean(), (diff > 0).mean()))
    print(f"{i:3d} {os.path.basename(path)} decode max {stats['decode'][-1][0]} mean {stats['decode'][-1][1]:.4f} | "
          f"crop max {stats['crop'][-1][0]} mean {stats['crop'][-1][1]:.4f} | resize-only max {stats['resize_only'][-1][0]}")
for k, v in stats.items():
    v = np.array(v)
    print(f"{k:12s}: max |diff| {int(v[:,0].max())}, mean |diff| {v[:,1].mean():.5f}, fraction of differing values {v[:,2].mean():.5f}")
