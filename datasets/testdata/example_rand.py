"""Print the random draws that TestExampleRandGolden expects, computed without the Go code.

The steps are those of seedExampleRand in source.go and randomResizedCrop in transform.go. PCG is
seeded with (mix(seed ^ C) ^ mix(epoch), mix(index ^ C)), where mix is the SplitMix64 finalizer
and C = 0x6a09e667f3bcc908. A float is the top 53 bits of a draw, and crop sides are rounded half
up. Run from this directory: python3 example_rand.py
"""

import math

from epoch_order import MASK64, PCG, splitmix64_finalizer, uniform_below

AUGMENT_STREAM = 0x6A09E667F3BCC908


def example_rand(seed, epoch, index):
    high = splitmix64_finalizer(seed ^ AUGMENT_STREAM) ^ splitmix64_finalizer(epoch)
    return PCG(high & MASK64, splitmix64_finalizer(index ^ AUGMENT_STREAM))


def uniform_float(source):
    return (source.uint64() >> 11) * 2.0**-53


def random_resized_crop(width, height, source, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Return (left, top, right, bottom) of the crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * uniform_float(source))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * uniform_float(source))
        w = math.floor(math.sqrt(target_area * aspect) + 0.5)
        h = math.floor(math.sqrt(target_area / aspect) + 0.5)
        if 0 < w <= width and 0 < h <= height:
            top = uniform_below(source, height - h + 1)
            left = uniform_below(source, width - w + 1)
            return (left, top, left + w, top + h)
    raise ValueError("no crop fits: the golden cases avoid the fallback")


source = example_rand(1, 0, 0)
print("seed 1, epoch 0, index 0:", [hex(source.uint64()) for _ in range(2)])
source = example_rand(7, 3, 12345)
print("seed 7, epoch 3, index 12345:", hex(source.uint64()))
for index in range(3):
    print(f"crop of 500x375, seed 2, epoch 1, index {index}:", random_resized_crop(500, 375, example_rand(2, 1, index)))
