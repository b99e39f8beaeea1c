# Plots durable-append throughput against concurrent clients, one line per system, one panel
# per transaction size. Run by `myelin-load report --png`: the plot data (JSON) comes on
# standard input, the PNG path is the only argument. Needs matplotlib.
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.load(sys.stdin)
panels = data["panels"]
fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
for ax, panel in zip(axes[0], panels):
    for series in panel["series"]:
        if series["name"].startswith("disk"):
            one = "one transaction" in series["name"]
            ax.plot(series["x"], series["y"], color="0.35" if one else "0.6",
                    linestyle=":" if one else "--", marker=None if one else "o", label=series["name"])
        else:
            ax.plot(series["x"], series["y"], marker="o", label=series["name"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(panel["ticks"])
    ax.set_xticklabels([str(t) for t in panel["ticks"]])
    ax.minorticks_off()
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("events/s, acknowledged durable")
    ax.set_title(panel["title"])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
fig.suptitle(data["title"])
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=110)
