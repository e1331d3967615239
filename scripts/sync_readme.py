"""Write README.md's results section from the committed demo outputs, so its numbers are generated, never typed.

    python scripts/sync_readme.py            # after `dvc repro` on the demo params, before committing
    python scripts/sync_readme.py --check    # exit 1 if README.md differs from what the committed metrics give (a test)

The section between the `results:start` / `results:end` markers gets the report's "What this run shows" block
(metrics/report.md, written by the report stage) and a table of metrics/headline.json: every method on the same test
users, 1+9 candidates.
"""

import argparse
import json
import sys
from pathlib import Path

from mllmrec import paths
from mllmrec.evaluation.summary import name

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start (scripts/sync_readme.py writes this section) -->", "<!-- results:end -->"


def summary_block(report: str) -> str:
    """The report's opening block without its heading: everything before the first table's heading."""
    head = "## What this run shows\n"
    if not report.startswith(head):
        raise SystemExit(f"{paths.REPORT_MD} does not start with {head.strip()!r}: rerun `dvc repro report`")
    return report[len(head) :].split("\n### ", 1)[0].strip()


def headline_table(headline: dict, size: str = "n9") -> str:
    rows = headline[size]
    lines = [
        f"Every method on the same {rows['n']} test users, 1+{size[1:]} candidates (`{paths.HEADLINE}`):",
        "",
        "| method | HR@1 | HR@5 | NDCG@10 |",
        "|---|---|---|---|",
    ]
    for method, m in rows.items():
        if method != "n":
            lines.append(f"| {name(method)} | {m['HR@1']:.3f} | {m['HR@5']:.3f} | {m['NDCG@10']:.3f} |")
    return "\n".join(lines)


def section(root: Path = ROOT) -> str:
    report = (root / paths.REPORT_MD).read_text()
    headline = json.loads((root / paths.HEADLINE).read_text())
    return f"{START}\n{summary_block(report)}\n\n{headline_table(headline)}\n{END}"


def synced(readme: str, new_section: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md: the markers {START!r} and {END!r} are missing")
    head, rest = readme.split(START, 1)
    return head + new_section + rest.split(END, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date; write nothing")
    args = parser.parse_args()
    path = ROOT / "README.md"
    old = path.read_text()
    new = synced(old, section())
    if args.check:
        if new != old:
            print(
                "README.md's results section differs from metrics/: run python scripts/sync_readme.py", file=sys.stderr
            )
            return 1
        return 0
    path.write_text(new)
    print("README.md: results section written" if new != old else "README.md: results section already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
