"""Build the offline toy lab (tokenizer, SFT data, comparisons, ranked lists, prompts, manifest).

    python scripts/make_toylab.py                      # -> <project root>/runs/toylab/data, where recipes look
    python scripts/make_toylab.py --out runs/toylab_small --seed 1 --n_sft 500 --n_comparisons 500

The project root is $RLHFJAX_HOME if set, else this repository (see rlhfjax.config.project_root).
Recipes build the same lab on first use, so this script is only needed for other seeds or sizes.
"""

import argparse
import json
import os
import time

from rlhfjax.config import project_root
from rlhfjax.data.toylab import Sizes, build_toylab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.join(project_root(__file__), "runs", "toylab", "data")  # = data.toylab_dir's default
    parser.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    parser.add_argument("--seed", type=int, default=0)
    for name, default in (("n_sft", 4000), ("n_comparisons", 4000), ("n_ranked", 500), ("n_prompts", 2000),
                          ("n_ood_prompts", 400)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--harmful_rate", type=float, default=0.2)
    parser.add_argument("--pools", default="helpful,harmless,mixed", help="comma-separated annotator pools")
    args = parser.parse_args()
    start = time.time()
    sizes = Sizes(sft=args.n_sft, comparisons=args.n_comparisons, ranked=args.n_ranked, prompts=args.n_prompts,
                  ood_prompts=args.n_ood_prompts)
    manifest = build_toylab(args.out, args.seed, sizes=sizes, harmful_rate=args.harmful_rate,
                            pools=tuple(args.pools.split(",")))
    print(json.dumps({"out": args.out, "seconds": round(time.time() - start, 2), "counts": manifest["counts"],
                      "stats": manifest["stats"]}, indent=2))


if __name__ == "__main__":
    main()
