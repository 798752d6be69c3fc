"""Refits HASTE's time model (src/haste/cost.rs) to per-layer times measured on this machine.

    haste bench --model M --data D --hyperplanes 14 --all-layers --layers --json > a.json
    python3 bench/fit_cost_model.py a.json [b.json ...]

Each HASTE layer's measured time over dense, minus the share of channels it keeps, is linear
in the model's four constants (`cost_terms` in cost.rs): OVERHEAD_CYCLES_PER_CHANNEL_PIXEL x
hashing + PATCH_KERNEL_LOSS + MERGE_SHARE_BASE x merge + MERGE_SHARE_PER_MB x
merge_beyond_cache. This prints the least-squares constants and, per layer, the measured
ratio with the current and the refitted prediction. A tool, not a test: per-layer times on a
shared machine move by 10-30 % between runs, so feed it several runs.
"""
import json, sys

CURRENT = [5.2, 0.12, 0.03, 0.13]
NAMES = ["OVERHEAD_CYCLES_PER_CHANNEL_PIXEL", "PATCH_KERNEL_LOSS", "MERGE_SHARE_BASE", "MERGE_SHARE_PER_MB"]


def rows(paths):
    for path in paths:
        for layer in json.load(open(path)).get("layers", []):
            t = layer.get("cost_terms")
            if t:
                x = [t["hashing"], 1.0, t["merge"], t["merge_beyond_cache"]]
                yield path, layer, x, layer["haste_seconds"] / layer["dense_seconds"] - t["kept"], t["kept"]


def solve(a, b):
    """Gaussian elimination with partial pivoting for the small normal equations."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        if abs(m[i][i]) < 1e-12:
            raise SystemExit("the layers do not determine every constant; add other models")
        for r in range(n):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [u - f * v for u, v in zip(m[r], m[i])]
    return [m[i][n] / m[i][i] for i in range(n)]


def main(paths):
    data = list(rows(paths))
    if len(data) < 4:
        raise SystemExit("need at least 4 HASTE layers with timings (bench --layers --json)")
    ata = [[sum(x[i] * x[j] for _, _, x, _, _ in data) for j in range(4)] for i in range(4)]
    aty = [sum(x[i] * y for _, _, x, y, _ in data) for i in range(4)]
    fit = solve(ata, aty)
    for name, old, new in zip(NAMES, CURRENT, fit):
        print(f"{name:36} {old:8.3f} -> {new:8.3f}")
    # Per layer, the median measured ratio over the runs given: one run's layer times move
    # by 10-30 % on a shared machine, more than the model's error.
    by_layer = {}
    for path, layer, x, y, kept in data:
        by_layer.setdefault((layer["name"], layer["tile"]), (layer, x, kept, []))[3].append(y + kept)
    print(f"\n{'layer':40} {'c_in>c_out':>11} {'tile':>4} {'runs':>4} {'measured':>9} {'current':>8} {'refit':>8}")
    worst = [0.0, 0.0]
    for (name, tile), (layer, x, kept, measured) in by_layer.items():
        m = sorted(measured)[len(measured) // 2]
        cur = kept + sum(c * v for c, v in zip(CURRENT, x))
        new = kept + sum(c * v for c, v in zip(fit, x))
        worst = [max(worst[0], abs(cur / m - 1)), max(worst[1], abs(new / m - 1))]
        print(f"{name[:40]:40} {layer['c_in']:>5}>{layer['c_out']:<5} {tile:>4} {len(measured):>4} "
              f"{m:9.3f} {cur:8.3f} {new:8.3f}")
    print(f"\nlargest error against the median: current {100 * worst[0]:.0f} %, refit {100 * worst[1]:.0f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
