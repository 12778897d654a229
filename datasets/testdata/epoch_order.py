"""Print the epoch orders that TestEpochOrderGolden expects, computed without the Go code.

The steps are those of epochOrder in batch.go: PCG-DXSM with the 128-bit LCG multiplier of Go's
math/rand/v2, seeded with (seed, SplitMix64 finalizer of the epoch), then Lemire's bounded draw,
then a Fisher-Yates shuffle from the last element down. Run: python3 epoch_order.py
"""

MASK64 = (1 << 64) - 1
MASK128 = (1 << 128) - 1
LCG_MULTIPLIER = (2549297995355413924 << 64) | 4865540595714422341
LCG_INCREMENT = (6364136223846793005 << 64) | 1442695040888963407
DXSM_MULTIPLIER = 0xDA942042E4DD58B5


class PCG:
    """PCG-DXSM: a 128-bit LCG whose state is mixed down to a 64-bit output."""

    def __init__(self, seed_high, seed_low):
        self.state = (seed_high << 64) | seed_low

    def uint64(self):
        self.state = (self.state * LCG_MULTIPLIER + LCG_INCREMENT) & MASK128
        high, low = self.state >> 64, self.state & MASK64
        high ^= high >> 32
        high = (high * DXSM_MULTIPLIER) & MASK64
        high ^= high >> 48
        return (high * (low | 1)) & MASK64


def splitmix64_finalizer(x):
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def uniform_below(source, n):
    """Draw from [0, n), rejecting products whose low word is below 2^64 mod n."""
    while True:
        product = source.uint64() * n
        if product & MASK64 >= (1 << 64) % n:
            return product >> 64


def epoch_order(n, seed, epoch):
    source = PCG(seed, splitmix64_finalizer(epoch))
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = uniform_below(source, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


if __name__ == "__main__":
    for epoch in (0, 1):
        print(f"seed 1, epoch {epoch}:", epoch_order(10, 1, epoch))
