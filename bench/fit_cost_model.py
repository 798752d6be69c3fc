"""Refits HASTE's time model (src/haste/cost.rs) to per-layer times measured on this machine.

    haste bench --model M --data D --hyperplanes 14 --all-layers --include-1x1 --layers \
        --runs 4 --tile 8 --threads 1 --json > a.json
    python3 bench/fit_cost_model.py a.json [b.json ...]

Each HASTE layer's measured time over dense is linear in eleven constants (`CostModel` in
cost_model.rs, `cost_terms` in cost.rs): kept x kept + fixed x fixed + input_merge x
input_merge + per_input_channel x per_input_channel + per_output_channel x
per_output_channel + merge x merge + merge_per_mb x merge_beyond_cache + multi x multi +
finish x finish + finish_exp x finish_exp + scaled_input x scaled_input. A term no layer of
a kind has (no activation with an exponential, no folded input scale among the 3x3 layers)
keeps its constant at 0. Per instruction-set tier found in the runs (`isa` in bench's JSON) and
kind of convolution (spatial, or 1x1: `pointwise`), this prints the least-squares constants
(relative errors weighted alike, so small and large layers count the same) as Rust to paste
into cost.rs, and the share of layers the current and the refitted model predict within
10 %; with `--layers`, each layer's measured ratio beside both predictions.

With `--out FILE`, it also writes the refitted constants as a cost model file; haste uses
them instead of its own wherever the environment variable HASTE_COST_MODEL names that file
(src/haste/cost_file.rs), no rebuild needed:

    python3 bench/fit_cost_model.py --out my-machine.json a.json b.json
    HASTE_COST_MODEL=my-machine.json haste eval ...

A tool, not a test: per-layer times on a shared machine move by 5-15 % between runs, so feed
it several runs (tiles 4, 8 and 16 and two values of L give the fit different shares merged
and patch sizes to separate the constants by).
"""
import json, os, sys

TERMS = ["kept", "fixed", "input_merge", "per_input_channel", "per_output_channel", "merge",
         "merge_beyond_cache", "multi", "finish", "finish_exp", "scaled_input"]
CONSTANTS = ["kept", "fixed", "input_merge", "per_input_channel", "per_output_channel", "merge",
             "merge_per_mb", "multi", "finish", "finish_exp", "scaled_input"]


def rows(paths):
    for path in paths:
        run = json.load(open(path))
        for layer in run.get("layers", []):
            t = layer.get("cost_terms")
            # A dense step of 0 s is a layer the dense plan fused into its neighbour.
            if t and layer["dense_seconds"] > 0 and layer["haste_seconds"] > 0:
                y = layer["haste_seconds"] / layer["dense_seconds"]
                kind = "pointwise" if t.get("pointwise") else "spatial"
                # Runs of an older haste lack the later terms: 0.
                yield (run.get("isa", "?"), kind), layer, [t.get(k, 0.0) for k in TERMS], y, layer.get("predicted_time_ratio")


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


def fit(data):
    """Least squares of (prediction - measured) / measured over the layers, every constant at
    least 0: a negative one (a cost that makes HASTE faster) is fixed at 0 and the others
    refitted, the most negative first."""
    n = len(TERMS)
    w = [[v / y for v in x] for _, _, x, y, _ in data]
    free = [i for i in range(n) if any(row[i] != 0 for row in w)]
    while True:
        ata = [[sum(row[i] * row[j] for row in w) for j in free] for i in free]
        aty = [sum(row[i] for row in w) for i in free]
        solved = solve(ata, aty)
        worst = min(range(len(free)), key=lambda k: solved[k])
        if solved[worst] >= 0:
            constants = [0.0] * n
            for k, c in zip(free, solved):
                constants[k] = c
            return constants
        free.pop(worst)


def report(key, data, show_layers):
    """Prints the fit for one (tier, kind) and returns its constants."""
    constants = fit(data)
    print(f"{key[0]}, {key[1]}: {len(data)} layer timings")
    print("    CostModel {")
    for name, c in zip(CONSTANTS, constants):
        print(f"        {name}: {c:.3g},")
    print("    }")
    errors = {"current": [], "refit": []}
    for _, layer, x, y, current in data:
        refit = sum(c * v for c, v in zip(constants, x))
        errors["refit"].append(refit / y - 1)
        if current is not None:
            errors["current"].append(current / y - 1)
        if show_layers:
            print(f"  {layer['name'][:40]:40} {layer['c_in']:>5}>{layer['c_out']:<5} "
                  f"{layer['tile']:>3} {y:8.3f} {current or float('nan'):8.3f} {refit:8.3f}")
    for name, e in errors.items():
        if e:
            within = sum(abs(v) <= 0.1 for v in e) / len(e)
            mean = sum(abs(v) for v in e) / len(e)
            print(f"  {name:8} within 10 %: {100 * within:5.1f} % of layers, "
                  f"mean |error| {100 * mean:.1f} %, largest {100 * max(map(abs, e)):.0f} %")
    return constants


def write_model(path, fitted):
    """Writes the cost model file haste reads through HASTE_COST_MODEL (whole or not at all)."""
    tiers = {}
    for (isa, kind), constants in sorted(fitted.items()):
        tiers.setdefault(isa, {})[kind] = dict(zip(CONSTANTS, constants))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"format": "haste-cost-model/1", "tiers": tiers}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}: use it with HASTE_COST_MODEL={path}")


def main(args):
    show_layers = "--layers" in args
    out = None
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            raise SystemExit("--out needs a file name")
        out = args[i + 1]
        args = args[:i] + args[i + 2:]
    paths = [a for a in args if a != "--layers"]
    by_kind = {}
    for row in rows(paths):
        by_kind.setdefault(row[0], []).append(row)
    if not by_kind:
        raise SystemExit("no HASTE layers with timings (haste bench --layers --json)")
    fitted = {}
    for key, data in sorted(by_kind.items()):
        if len(data) < 3 * len(TERMS):
            print(f"{key[0]}, {key[1]}: {len(data)} layer timings, too few to fit {len(TERMS)} constants")
            continue
        fitted[key] = report(key, data, show_layers)
    if out and fitted:
        write_model(out, fitted)


if __name__ == "__main__":
    main(sys.argv[1:])
