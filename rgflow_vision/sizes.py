"""The one size rule every layer shares: RG-Flow halves the lattice down to its blocks, so sizes are
powers of two. Imports nothing, so flows, data and the lattice slice can all use it."""


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0
