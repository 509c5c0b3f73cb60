"""Reference for benches/basket.sh: mlxtend fpgrowth + association_rules on the baskets the Rust bench wrote.

Reads baskets.tsv (one basket a line, StockCodes tab-separated), one-hot encodes it with mlxtend's
TransactionEncoder (timed apart), then for each minimum support times fpgrowth + association_rules
(metric="confidence") + the lift filter, best of N, and writes the rules in the Rust bench's CSV layout.
"""

import argparse
import math
import time

import mlxtend
import pandas as pd
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder

METRICS = ["antecedent support", "consequent support", "support", "confidence", "lift", "leverage", "conviction"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baskets", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-support", default="0.02,0.01")
    ap.add_argument("--min-confidence", type=float, default=0.3)
    ap.add_argument("--min-lift", type=float, default=1.0)
    ap.add_argument("--max-len", default="none")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    max_len = None if a.max_len == "none" else int(a.max_len)

    with open(a.baskets, encoding="utf-8") as f:
        baskets = [line.rstrip("\n").split("\t") for line in f]
    t = time.perf_counter()
    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(baskets).transform(baskets), columns=te.columns_)
    enc = time.perf_counter() - t
    print(
        f"mlxtend {mlxtend.__version__} (pandas {pd.__version__}): {len(onehot)} baskets x {onehot.shape[1]} items; "
        f"TransactionEncoder one-hot {enc:.3f} s (not in the timings below)"
    )

    for s in a.min_support.split(","):
        min_support = float(s)
        best = math.inf
        for _ in range(max(a.runs, 1)):
            t = time.perf_counter()
            fi = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=max_len)
            rules = association_rules(
                fi,
                num_itemsets=len(onehot),
                metric="confidence",
                min_threshold=a.min_confidence,
                return_metrics=METRICS,
            )
            rules = rules[rules["lift"] >= a.min_lift]
            best = min(best, time.perf_counter() - t)
        longest = int(fi["itemsets"].map(len).max()) if len(fi) else 0
        print(
            f"mlxtend min_support={s}: {len(fi)} itemsets (longest {longest}), {len(rules)} rules; "
            f"fpgrowth+association_rules best of {max(a.runs, 1)} = {best * 1e3:.1f} ms"
        )
        print(f"TIME mlxtend {s} {best:.6f}")
        out = pd.DataFrame(
            {
                "antecedents": ["|".join(sorted(x)) for x in rules["antecedents"]],
                "consequents": ["|".join(sorted(x)) for x in rules["consequents"]],
                **{m: rules[m].to_numpy() for m in METRICS},
            }
        )
        out.to_csv(f"{a.out}/rules_mlxtend_{s}.csv", index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
