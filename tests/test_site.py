"""The leaderboard page (bench.render.site): its numbers against the records, and a real browser.

The browser test drives Debian's headless ``chromium`` through ``chromium-driver`` with Selenium
(nothing downloads a browser; ``make test`` installs both packages when it runs as root). It
skips when they are missing outside CI, and fails under CI (``CI`` set), where they must be there.
"""

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.core.record import accuracies as _accuracies
from bench.core.record import encode as bits
from bench.core.stats import wilson
from bench.core.threats import THREATS
from bench.render.browser import browser_paths

N = 40
CPU, GPU = "cpu (x86_64, 2 threads)", "NVIDIA H200"


def outcome(seed, p):
    return np.random.default_rng(seed).random(N) < p


def rec(
    defense,
    ok,
    *,
    threat="gray",
    attack="fgsm",
    steps=None,
    eps=0.3,
    device=CPU,
    ms=0.5,
    randomized=False,
    eot=None,
    run="r1",
):
    ok_t = torch.as_tensor(ok)
    ones = torch.ones(N, dtype=torch.bool)
    params = {"steps": steps, "alpha": 0.75 / steps, "random_start": True} if steps else {}
    r = dict(
        dataset="mnist",
        classifier="mnist-cnn",
        classifier_hash="c0",
        data_fingerprint="d0",
        defense=defense,
        defense_params={},
        defense_randomized=randomized,
        threat=threat,
        attack=attack,
        attack_params=params,
        attack_labels="true",
        norm="Linf",
        eps=eps,
        n=N,
        seed=0,
        eot_samples=eot,
        device=device,
        defense_ms_per_sample=ms,
        run_id=run,
        time=1.0,
        checks=[],
        cell_key=f"{defense}-{threat}-{attack}-{steps}-{eps}-{device}",
        correct={"clean": bits(ones), "adv": bits(ok_t), "defended_clean": bits(ones), "defended_adv": bits(ok_t)},
    )
    r.update(_accuracies({"clean": ones, "adv": ok_t, "defended_clean": ones, "defended_adv": ok_t}))
    r["defended_clean_acc"] = 0.975
    return r


def fixture_records():
    """Defense a: two gray attacks, a gray cell on a GPU too, an under-budget white PGD sweep;
    b: randomised, gray and bpda-eot; none: gray; c: another eps (its own table)."""
    a = {
        "fgsm": outcome(1, 0.8),
        "pgd": outcome(2, 0.7),
        "gpu": outcome(3, 0.8),
        "w10": outcome(4, 0.7),
        "w20": outcome(5, 0.5),
        "w40": outcome(6, 0.3),
    }
    b = {"gray": outcome(7, 0.6), "eot": outcome(8, 0.4)}
    none = outcome(9, 0.1)
    records = [
        rec("a", a["fgsm"]),
        rec("a", a["pgd"], attack="pgd", steps=40, ms=0.7),
        rec("a", a["gpu"], device=GPU, ms=0.05),
        *[rec("a", a[f"w{s}"], threat="white", attack="pgd", steps=s, ms=0.6) for s in (10, 20, 40)],
        rec("b", b["gray"], ms=3.0, randomized=True),
        rec("b", b["eot"], threat="bpda-eot", attack="pgd", steps=40, ms=3.0, randomized=True, eot=8),
        rec("none", none, ms=0.0001, run="r2"),
        rec("c", outcome(10, 0.5), eps=0.1),
    ]
    gray_a = a["fgsm"] & a["pgd"] & a["gpu"]
    white_a = a["w10"] & a["w20"] & a["w40"]
    expected = {  # per defense: n, clean, gray, white, bpda, bpda-eot, worst, ms CPU, ms GPU
        "a": [N, 0.975, gray_a.mean(), white_a.mean(), None, None, (gray_a & white_a).mean(), 0.6, 0.05],
        "b": [N, 0.975, b["gray"].mean(), None, None, b["eot"].mean(), (b["gray"] & b["eot"]).mean(), 3.0, None],
        "none": [N, 0.975, none.mean(), None, None, None, none.mean(), 0.0001, None],
    }
    return records, expected


def write(results, records):
    for run in sorted({r["run_id"] for r in records}):
        d = results / "runs" / run
        d.mkdir(parents=True)
        (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r["run_id"] == run))
        (d / "config.json").write_text("{}\n")


class Tables(HTMLParser):
    """The page's tables as the HTML has them (what a reader without JS sees)."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.row = {"cells": [], "attrs": a}
        elif tag in ("th", "td") and self.tables:
            self.cell = {"text": "", "attrs": a}

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            self.row["cells"].append(self.cell)
            self.cell = None
        elif tag == "tr" and self.tables:
            t = self.tables[-1]
            (t["rows"] if "data-defense" in self.row["attrs"] else t["head"]).append(self.row)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def check_row(values, expected, where):
    """values: data-value strings of n, clean, 4 threats, worst, ms CPU, ms GPU."""
    for i, (got, want) in enumerate(zip(values, expected)):
        if want is None:
            assert got == "", f"{where}: column {i} should be empty, got {got!r}"
        else:
            assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-15), f"{where}: column {i}"


def test_page_numbers_equal_the_records_without_a_browser(tmp_path):
    records, expected = fixture_records()
    write(tmp_path, records)
    assert main(["report", "--results-dir", str(tmp_path), "--html"]) == 0
    index = tmp_path / "site" / "index.html"
    page = index.read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page  # no CDN, nothing fetched
    assert re.search(r"<script>.*</script>", page, re.S) and "<style>" in page
    parser = Tables()
    parser.feed(page)
    assert len(parser.tables) == 2  # eps 0.3 and eps 0.1 never share a table
    board = next(t for t in parser.tables if any(r["attrs"]["data-defense"] == "a" for r in t["rows"]))
    heads = [c["text"].strip() for c in board["head"][0]["cells"]]
    assert heads[:8] == ["defense", "n", "clean (defended)", *THREATS, "worst"]
    assert heads[8].startswith("ms/sample") and "CPU" in heads[8] and GPU in heads[9]
    rows = {r["attrs"]["data-defense"]: r["cells"] for r in board["rows"]}
    # best first by the worst case over threat models (issue 22: the order a reader picking a defense wants)
    assert list(rows) == sorted(expected, key=lambda d: (expected[d][6] is None, -(expected[d][6] or 0), d))
    assert "set by " in rows["a"][7]["attrs"]["title"]  # the worst value names the attack that set it
    for name, want in expected.items():
        check_row([c["attrs"].get("data-value", "") for c in rows[name][1:10]], want, name)
        for c, w in zip(rows[name][2:8], want[1:7]):  # shown to 3 decimals, with the Wilson interval
            if w is not None:
                assert c["text"].startswith(f"{w:.3f}")
    lo, hi = wilson(round(expected["a"][2] * N), N)
    assert f"[{lo:.3f}, {hi:.3f}]" in rows["a"][3]["text"]
    assert rows["b"][0]["text"] == "bR" and rows["a"][0]["text"] == "a"  # the randomised badge
    # a's white column only has a sweep whose last doubling still lowers accuracy: flagged
    assert rows["a"][4]["attrs"].get("class") == "flagged" and "†" in rows["a"][4]["text"]
    assert "not converged" in rows["a"][4]["attrs"]["title"]
    assert rows["a"][3]["attrs"].get("class") != "flagged"
    links = re.findall(r'href="([^"]+)"', page)
    assert "../runs/r1/records.jsonl" in links and "../runs/r2/config.json" in links
    for link in links:
        if not link.startswith("plots/"):
            assert (index.parent / link).resolve().is_file(), link
    for img in re.findall(r'<img src="([^"]+)"', page):
        assert (index.parent / img).is_file()
    assert any("adequacy_" in img for img in re.findall(r'<img src="([^"]+)"', page))
    first = page
    assert main(["report", "--results-dir", str(tmp_path), "--html", "--no-plots"]) == 0
    assert index.read_text() == first  # regenerated byte for byte


def _browser_or_skip():
    binary, driver = browser_paths()
    try:
        import selenium  # noqa: F401

        have_client = True
    except ImportError:
        have_client = False
    if binary and driver and have_client:
        return
    missing = ", ".join(
        n for n, ok in (("chromium", binary), ("chromium-driver", driver), ("selenium", have_client)) if not ok
    )
    msg = f"{missing} missing: `make test` installs them (apt-get install chromium chromium-driver as root)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"under CI the browser test must run: {msg}")
    pytest.skip(msg)


def test_page_in_headless_chromium(tmp_path):
    _browser_or_skip()
    from selenium.webdriver.common.by import By

    from bench.render.browser import browser

    records, expected = fixture_records()
    write(tmp_path, records)
    assert main(["report", "--results-dir", str(tmp_path), "--html"]) == 0
    index = tmp_path / "site" / "index.html"
    drv = browser()
    try:
        drv.get(index.resolve().as_uri())
        assert drv.title == "defense-bench leaderboard"
        table = drv.find_element(By.CSS_SELECTOR, "section#mnist-mnist-cnn-eps-0_3 table.board")

        def rows():
            return table.find_elements(By.CSS_SELECTOR, "tbody tr")

        def values(row):
            return [td.get_attribute("data-value") or "" for td in row.find_elements(By.CSS_SELECTOR, "td")][:9]

        by_worst = sorted(expected, key=lambda d: (expected[d][6] is None, -(expected[d][6] or 0), d))
        assert [r.get_attribute("data-defense") for r in rows()] == by_worst  # best worst case first
        for r in rows():
            name = r.get_attribute("data-defense")
            check_row(values(r), expected[name], name)
            shown = r.find_elements(By.CSS_SELECTOR, "td")[2]  # gray, as rendered
            assert shown.text.splitlines()[0] == f"{expected[name][2]:.3f}"
            badges = r.find_elements(By.CSS_SELECTOR, ".badge")
            assert bool(badges) == (name == "b")
        link = next(r for r in rows() if r.get_attribute("data-defense") == "a").find_element(
            By.CSS_SELECTOR, "td.links a"
        )
        assert link.get_attribute("href").endswith("/runs/r1/records.jsonl")

        gray = table.find_elements(By.CSS_SELECTOR, "thead th")[3]
        assert gray.text == "gray"
        by_gray = sorted(expected, key=lambda d: expected[d][2])
        gray.click()
        order = [r.get_attribute("data-defense") for r in rows()]
        assert order == by_gray[::-1]  # highest first
        assert gray.get_attribute("aria-sort") == "descending"
        gray.click()
        assert [r.get_attribute("data-defense") for r in rows()] == by_gray
        # a column with empty cells: they stay last whichever the direction
        white = table.find_elements(By.CSS_SELECTOR, "thead th")[4]
        white.click()
        assert rows()[0].get_attribute("data-defense") == "a"
        shot = tmp_path / "leaderboard.png"
        assert drv.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        drv.quit()


def test_missing_browser_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(__import__(__name__), "browser_paths", lambda: (None, None))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium, chromium-driver missing"):
        _browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI the browser test must run"):
        _browser_or_skip()


def test_one_page_over_several_results_dirs_links_each_run_into_its_own(tmp_path):
    records, _ = fixture_records()
    a, b = tmp_path / "grid-a", tmp_path / "grid-b"
    write(a, records)
    (a / "plots").mkdir()
    (a / "plots" / "acc_vs_eps_x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write(
        b,
        [
            {
                **r,
                "run_id": "r9",
                "dataset": "fashion-mnist",
                "cell_key": f"{r.get('cell_key')}-b",
                "identity": {**(r.get("identity") or {}), "data": {"dataset": "fashion-mnist"}},
            }
            for r in records
            if r.get("run_id") == "r1"
        ],
    )
    out = tmp_path / "all"
    out.mkdir()
    assert main(["report", "--results-dir", str(out), "--site-from", f"{a},{b}"]) == 0
    index = out / "site" / "index.html"
    page = index.read_text()
    assert "mnist · " in page and "fashion-mnist · " in page  # both grids' tables on one page
    links = re.findall(r'href="([^"]+)"', page)
    assert any("grid-b/runs/r9/" in link for link in links) and any("grid-a/runs/r1/" in link for link in links)
    for link in links + re.findall(r'<img src="([^"]+)"', page):
        assert (index.parent / link).resolve().is_file(), link
    assert not (out / "results.md").exists()  # a page, not a report
    assert main(["report", "--results-dir", str(out), "--site-from", str(tmp_path / "nope")]) == 2


def test_cells_of_different_n_meet_image_by_image_on_the_first_images():
    """AutoAttack on 8 images beside PGD on 16: the value is the AND on the first 8, and the attack
    named is one measured on those 8 images."""
    import numpy as np
    import pandas as pd

    from bench.core import record
    from bench.render.leaderboard import combine

    pgd = np.array([1] * 12 + [0] * 4, bool)
    aa = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    cells = pd.DataFrame(
        [
            {
                "threat": "white",
                "attack": a,
                "n": len(m),
                "defended_adv_acc": m.mean(),
                "kind": "cell",
                "correct": {"defended_adv": record.encode(m)},
            }
            for a, m in (("pgd", pgd), ("aa-square", aa))
        ]
    )
    v = combine(cells, "white-box")
    assert v.n == 8 and v.acc == (pgd[:8] & aa).mean() == 0.75
    assert "first 8 images" in v.detail and "set by aa-square" in v.detail


def test_a_cells_tooltip_names_its_cascade_stage_and_its_passes_where_stored():
    import numpy as np
    import pandas as pd

    from bench.core import record
    from bench.render.leaderboard import combine

    ok = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    ran = np.array([1, 0, 1, 1, 1, 1, 1, 0], bool)
    base = {
        "threat": "white",
        "n": 8,
        "defended_adv_acc": ok.mean(),
        "kind": "cell",
        "correct": {"defended_adv": record.encode(ok)},
    }
    cells = pd.DataFrame(
        [
            {**base, "attack": "pgd"},
            {
                **base,
                "attack": "aa-square",
                "cascade": ["aa-apgd-ce", "aa-apgd-t", "aa-fab-t"],
                "ran_on": record.encode(ran),
                "attack_forward_per_sample": 12.5,
                "attack_backward_per_sample": 0.0,
            },
        ]
    )
    detail = combine(cells, "white-box").detail
    assert "aa-square · cascade after aa-apgd-ce, aa-apgd-t, aa-fab-t (ran on 6)" in detail
    assert "12.5 forward + 0 backward passes/image" in detail
    assert "white · pgd: 0.750" in detail and "passes/image" not in detail.split("pgd: 0.750")[1].split("\n")[0]


# --- one number everywhere: the page's worst case is README's headline's ------------------------

ROOT = Path(__file__).resolve().parents[1]


def _headline_block():
    """README's headline block and the results dirs its command names."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- headline:start -->", 1)[1].split("<!-- headline:end -->", 1)[0]
    dirs = re.search(r"--headline (\S+?)`", block).group(1).split(",")
    return block, dirs


def _readme_rows(block):
    """(table title, defense) → (worst case as printed, n), from the headline's markdown tables."""
    out, title, cols = {}, None, None
    for line in block.splitlines():
        if m := re.match(r"\*\*(.+?)\*\*", line):
            title, cols = m.group(1), None
        elif line.startswith("|") and title:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cols is None:
                cols = cells
            elif not set(line) <= set("|:- "):
                row = dict(zip(cols, cells))
                out[(title, row["defense"])] = (row["worst case"], int(row["n"]))
    return out


def test_page_and_headline_rank_every_row_by_one_number_from_the_same_records():
    """Built from the same committed records (the README headline's folders, the GPU run's among
    them), every headline row is a page row with the same worst case, interval and n."""
    from bench.analysis.frame import frame
    from bench.core.labels import fmt_eps
    from bench.render import headline, leaderboard
    from bench.store.runs import iter_records

    _, dirs = _headline_block()
    df = frame([r for d in dirs for r in iter_records(ROOT / d)])
    page: dict = {}
    for t in leaderboard.leaderboard(df):
        for row in t.rows:
            page.setdefault((t.title, row.label), []).append(row)
    compared = 0
    for (ds, clf, eps), table in headline.rows(df).items():
        title = f"{ds} · {clf} · L∞ ε = {fmt_eps(eps)}"
        for _, r in table.iterrows():
            (p,) = page[(title, r["defense"])]  # one page row per headline row
            assert r["worst case"] == f"{p.worst.acc:.3f} [{p.worst.lo:.3f}, {p.worst.hi:.3f}]", (title, r["defense"])
            assert int(r["n"]) == p.worst.n, (title, r["defense"])
            compared += 1
    assert compared >= 26  # every defense of README's three tables, and the adaptive grid's other budgets


def test_the_committed_page_shows_readmes_headline_numbers_and_the_gpu_records():
    """docs/site/index.html (`make site`) against README's headline block (`make headline`): for
    every headline row, the page's worst case and n are README's; the page holds the GPU run's
    records, and leads with its figures."""
    from html import unescape

    block, dirs = _headline_block()
    readme = _readme_rows(block)
    assert len(readme) >= 26
    index = ROOT / "docs" / "site" / "index.html"
    page = index.read_text()
    rows = {}
    for title, body in re.findall(r'<section id="[^"]*"><h2>(.*?)</h2>(.*?)</section>', page, re.S):
        parser = Tables()
        parser.feed(body)
        for r in parser.tables[0]["rows"]:
            rows.setdefault((unescape(title), r["attrs"]["data-defense"]), []).append(r["cells"])
    for (title, defense), (worst, n) in readme.items():
        (cells,) = rows[(title, defense)]
        assert f"{float(cells[7]['attrs']['data-value']):.3f}" == worst.split()[0], (title, defense)
        assert int(cells[1]["attrs"]["data-value"]) == n, (title, defense)
    links = re.findall(r'href="([^"]+)"', page)
    for d in dirs:  # every folder of the headline, results/gpu/ too, has its records on the page
        assert any(f"/{d}/runs/" in link for link in links), d
    lead = re.findall(r'<figure class="lead"><img src="([^"]+)"', page)
    assert lead and all((index.parent / src).is_file() for src in lead)
    assert page.index('class="lead"') < page.index('<table class="board">')  # the figures come first
