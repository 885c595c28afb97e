"""Helpers of bench/gguf_headline.sh.
  budget MIX.json                 bits/weight of the block linears of `lcw-cli compress --json`
  recipe MIX.json AT.json IMAT    the autotuned types with GPTQ codes + the preset's embed/output
  row NAME PRESET EVAL.json A B C TABLE   one JSON line on stdout and one table row appended
"""
import json
import os
import sys


def budget(mix_path):
    j = json.load(open(mix_path))
    layers = [l for l in j["layers"] if l["name"] not in ("embed", "lm_head")]
    bits = sum(l["storage_bits"] for l in layers)
    params = sum(l["shape"][0] * l["shape"][1] for l in layers)
    print(bits / params)


def recipe(mix_path, at_path, imat):
    mix, at = json.load(open(mix_path)), json.load(open(at_path))
    rules = [{"targets": r["targets"], "weight": {"method": "gptq", "gguf": r["weight"]["method"]}}
             for r in at["rules"]]
    for l in mix["layers"]:
        if l["name"] in ("embed", "lm_head"):
            rules.append({"targets": [l["name"]], "weight": {"method": l["scheme"].split()[0]}})
    print(json.dumps({"lcw_recipe": 1, "name": "autotune-gptq", "imatrix": imat, "rules": rules}))


def row(name, preset, eval_path, a, b, c, table):
    j = json.load(open(eval_path))
    ca, cb, cc = j["configs"][0], j["configs"][1], j["configs"][2]
    line = {"model": name, "preset": preset, "bits_per_weight": ca["bits_per_weight"],
            "llamacpp_bytes": os.path.getsize(a), "lcw_bytes": os.path.getsize(b),
            "lcw_autotune_bytes": os.path.getsize(c),
            "llamacpp_kld": ca["kld"]["mean"], "llamacpp_kld_se": ca["kld"]["se"],
            "lcw_kld": cb["kld"]["mean"], "lcw_kld_se": cb["kld"]["se"],
            "lcw_autotune_kld": cc["kld"]["mean"], "lcw_autotune_kld_se": cc["kld"]["se"],
            "llamacpp_ppl": ca["ppl"], "lcw_ppl": cb["ppl"], "lcw_autotune_ppl": cc["ppl"],
            "base_ppl": ca["ppl_base"], "scored_tokens": ca["scored_tokens"]}
    print(json.dumps(line))

    def k(x):
        return f"{x['kld']['mean']:.4f} ± {x['kld']['se']:.4f}"

    best = min((ca, cb, cc), key=lambda x: x["kld"]["mean"])
    cells = [f"**{k(x)}**" if x is best else k(x) for x in (ca, cb, cc)]
    with open(table, "a") as t:
        t.write(f"| {name} | {preset} | {ca['bits_per_weight']:.3f} | {cells[0]} | {cells[1]} | "
                f"{cells[2]} | {ca['ppl']:.3f} / {cb['ppl']:.3f} / {cc['ppl']:.3f} | "
                f"{ca['ppl_base']:.3f} |\n")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"budget": budget, "recipe": recipe, "row": row}[cmd](*args)
