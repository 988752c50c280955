"""The reproduction report: its tables come from the CSVs, and the page shows them verbatim."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import quick_runs

from fobmaml import cli
from fobmaml.experiments import reproduction

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGE = DOCS / "reproduction.md"


def test_verdict_rules():
    assert reproduction.verdict_share(1.0) == "reproduced"
    assert reproduction.verdict_share(0.9) == "reproduced"
    assert reproduction.verdict_share(0.5) == "partly reproduced"
    assert reproduction.verdict_share(0.1) == "not reproduced"
    assert reproduction.verdict_rate(2.03, 2.0) == "reproduced"
    assert reproduction.verdict_rate(2.0, 2 / 3).startswith("partly reproduced")
    assert reproduction.verdict_rate(0.5, 1.0) == "not reproduced"


@pytest.fixture(scope="module")
def quick_docs(tmp_path_factory):
    """The three studies' quick runs, and a small Figure 1 CSV, laid out as under docs/."""
    docs = tmp_path_factory.mktemp("docs")
    for study in ("sweep", "delta", "stability"):
        shutil.copytree(quick_runs.quick_run(study, tmp_path_factory)[0], docs / study)
    (docs / "figure1").mkdir()
    rows = [
        ("method", "outer_lr", "iteration", "exact_loss", "gap"),
        *[
            (name, 1.0, it, 0.0, gap * (2 - it))
            for name, gap in [
                ("FO-B-MAML symmetric", 4e-4),
                ("FO-B-MAML symmetric + momentum", 2e-5),
                ("FO-MAML", 7e-3),
                ("Reptile", 1e-2),
                ("iMAML (cg=2)", 3e-3),
                ("iMAML (cg=5)", 3e-4),
                ("MAML", 1e-4),
            ]
            for it in (0, 1)
        ],
    ]
    with open(docs / "figure1" / "figure1_right.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return docs


def test_tables_count_what_the_csvs_hold(quick_docs):
    tables = reproduction.tables(quick_docs)
    assert set(tables) == {
        "claims",
        "sweep_wins",
        "sweep_where",
        "sweep_by_k",
        "delta",
        "stability",
    }
    with open(quick_docs / "sweep" / "estimator_error.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cells = {}
    for r in rows:
        cells.setdefault((r["kappa"], r["lam"], r["momentum"], r["K"]), {})[r["estimator"]] = float(
            r["rel_error"]
        )
    for rival in ("FO-MAML", "iMAML-cg5"):
        for beta in ("0.0", "0.5"):
            keys = [k for k in cells if k[2] == beta]
            wins = sum(cells[k]["FO-B-MAML-symmetric"] < cells[k][rival] for k in keys)
            line = next(
                x for x in tables["sweep_wins"].splitlines() if x.startswith(f"| {rival} |")
            )
            assert f"{wins}/{len(keys)}" in line.split("|")[2 if beta == "0.0" else 4]
    # The Figure 1 row reads the last gap of each method.
    claims = tables["claims"]
    assert "FO-B-MAML sym. 4.00e-04" in claims and "iMAML (cg=5) 3.00e-04" in claims
    for name in ("GD", "SNGDM"):
        assert f"| sinusoid | {name} |" in tables["stability"]


def test_report_command(quick_docs, tmp_path, capsys):
    assert cli.main(["report", "--docs", str(quick_docs)]) == 0
    out = capsys.readouterr().out
    assert "| paper claim | verdict |" in out and "<!-- sweep_wins" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", "--docs", str(empty)]) == 2
    assert "`docs` must hold the results" in capsys.readouterr().err


def test_the_page_shows_the_tables_of_the_committed_results():
    if not all((DOCS / name).is_file() for name in reproduction.INPUTS) or not PAGE.is_file():
        pytest.skip("the committed results are not in this tree (an sdist, say)")
    page = PAGE.read_text(encoding="utf-8")
    for name, table in reproduction.tables(DOCS).items():
        assert table in page, f"docs/reproduction.md does not show the current `{name}` table"


def test_the_readme_section_shows_the_current_claims_table():
    readme = ROOT / "README.md"
    if not readme.is_file() or not all((DOCS / name).is_file() for name in reproduction.INPUTS):
        pytest.skip("the README or the committed results are not in this tree")
    text = readme.read_text(encoding="utf-8")
    if "\n## Reproduction\n" not in text:
        pytest.skip("the README has no Reproduction section yet")
    section = text.split("\n## Reproduction\n", 1)[1].split("\n## ", 1)[0]
    assert reproduction.claims_table(DOCS) in section


def _mnist1d_run(folder, settings, accuracies):
    folder.mkdir(parents=True)
    results = {k: {"accuracy_after_adaptation": v} for k, v in accuracies.items()}
    (folder / "settings.json").write_text(json.dumps({"settings": settings, "results": results}))


def test_networks_table_applies_its_rules(tmp_path):
    # Three networks: FO-B-MAML within 0.02 of MAML on two of them (0.015 below, 0.01 above),
    # 0.2 away on the third; a memory sweep with a flat FO-B-MAML.
    mlp = {"model": "mlp", "layers": [40, 8, 5], "activation": "tanh"}
    cnn = {"model": "cnn", "channels": 4, "activation": "relu"}  # no "pool": an older run
    smooth = {"model": "cnn", "channels": 4, "activation": "tanh", "pool": "avg"}
    _mnist1d_run(tmp_path / "mnist1d", mlp, {"fobmaml": 0.5, "maml": 0.515, "fomaml": 0.4})
    _mnist1d_run(tmp_path / "mnist1d_cnn", cnn, {"fobmaml": 0.4, "maml": 0.6})
    _mnist1d_run(tmp_path / "mnist1d_cnn_smooth", smooth, {"fobmaml": 0.61, "maml": 0.6})
    (tmp_path / "memory").mkdir()
    summary = {
        "fobmaml FOBMAML(symmetric)": {"growth_mib": 0.5, "per_step_mib": 0.0},
        "fobmaml MAML": {"growth_mib": 117.0, "per_step_mib": 1.5},
        "torch-func MAML": {"per_step_mib": 400.0},
    }
    config = {"steps": [5, 80], "steps_channels": 256, "meta_batch": 16}
    (tmp_path / "memory" / "settings.json").write_text(
        json.dumps({"config": config, "summary": summary})
    )
    runs = reproduction.mnist1d_runs(tmp_path)
    assert [r["folder"] for r in runs] == ["mnist1d", "mnist1d_cnn", "mnist1d_cnn_smooth"]
    assert runs[1]["network"] == "CNN 4 ch. (relu, max pooling)" and runs[1]["fomaml"] is None
    rows = reproduction.networks_table(tmp_path).splitlines()[2:]
    assert len(rows) == 2
    track, memory = rows
    assert "| partly reproduced | 2/3 (67 %) of networks" in track
    assert "FO-B-MAML 0.400, MAML 0.600" in track
    assert "holds on MLP [40, 8, 5] (tanh), CNN 4 ch. (tanh, avg pooling)" in track
    assert "fails on CNN 4 ch. (relu, max pooling)" in track
    assert "| reproduced | K = 5 → 80 at 256 channels: FO-B-MAML +0.50 MiB" in memory
    assert "torch-func 400" in memory
    summary["fobmaml FOBMAML(symmetric)"]["growth_mib"] = 1.0  # not below 1 MiB
    (tmp_path / "memory" / "settings.json").write_text(
        json.dumps({"config": config, "summary": summary})
    )
    assert "| not reproduced | K = 5" in reproduction.networks_table(tmp_path)
