"""The docs against the code they describe: every default that docs/paper_map.md's table of open
choices states equals the configs' (pretrain.Config, its nested world and sac, transfer.Config),
and docs/cifar_table.png shows the numbers of the table in docs/cifar10.md (< 2 s)."""
import ast
import importlib.util
import json
import math
import re

import pytest

import pretrain
import transfer
from common import ROOT

spec = importlib.util.spec_from_file_location("cifar_benchmark", ROOT / "benchmarks" / "cifar.py")
cifar = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cifar)

PAPER_MAP = ROOT / "docs" / "paper_map.md"
SECTION = "## Choices the paper leaves open"
# choices a run depends on most: the table must keep a row for each
REQUIRED = {"world.mix", "world.ema", "world.ema_kind", "world.action_scale", "world.horizon",
            "apt_k", "temperature", "num_envs", "batch_size", "updates", "augment",
            "sac.gamma", "sac.alpha", "sac.autotune", "sac.reward_norm", "sac.updates"}


def choice_rows(text: str) -> list[dict]:
    """The table under SECTION -> one dict per row: choice, field ('' for '–'), default (the cell's
    text)."""
    lines = text.split(SECTION, 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in re.split(r"(?<!\\)\|", table[0])[1:-1]]
    assert header[:3] == ["choice", "config field", "default"], header
    rows = []
    for line in table[2:]:  # past the header and its |---| line
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # "\|" is no separator
        assert len(cells) == len(header), line
        field = cells[1]
        assert field == "–" or re.fullmatch(r"`[a-z_]+(\.[a-z_]+)?`", field), line
        rows.append(dict(choice=cells[0], field=field.strip("`") if field != "–" else "",
                         default=cells[2]))
    return rows


def config_value(field: str):
    """'sac.gamma' -> pretrain.Config().sac.gamma; 'transfer.x' -> transfer.Config().x."""
    parts = field.split(".")
    obj = transfer.Config() if parts[0] == "transfer" else pretrain.Config()
    for part in parts[1:] if parts[0] == "transfer" else parts:
        assert hasattr(obj, part), f"the table names {field}, which the config has not"
        obj = getattr(obj, part)
    return obj


def same(stated: str, value) -> bool:
    """Does the literal the table states (e.g. '0.5', '1.732', '"vp"', 'False', '100_000') equal
    the config's value, to the decimals the table shows?"""
    literal = ast.literal_eval(stated)
    if isinstance(value, bool) or isinstance(literal, (bool, str)):
        return type(literal) is type(value) and literal == value
    if isinstance(value, int):
        return isinstance(literal, int) and literal == value
    decimals = len(stated.split(".")[1]) if "." in stated and "e" not in stated.lower() else None
    if decimals is None:
        return math.isclose(literal, value, rel_tol=1e-9)
    return round(value, decimals) == literal


def test_the_open_choices_table_states_the_defaults_a_run_uses():
    rows = choice_rows(PAPER_MAP.read_text(encoding="utf-8"))
    fields = [r["field"] for r in rows if r["field"]]
    assert len(fields) == len(set(fields)), "a config field appears in two rows"
    assert REQUIRED <= set(fields), REQUIRED - set(fields)
    for row in rows:
        if row["field"]:
            stated = re.match(r"`([^`]+)`", row["default"])
            assert stated, f"{row['choice']}: the default cell must start with a `literal`"
            value = config_value(row["field"])
            assert same(stated.group(1), value), \
                f"docs/paper_map.md says {row['field']} = {stated.group(1)}, the config {value!r}"


def test_the_comparison_can_fail():
    assert same("0.5", 0.5) and same("1.732", 3 ** 0.5) and same('"vp"', "vp")
    assert same("100_000", 100_000) and same("False", False) and same("0.0003", 3e-4)
    assert not same("0.5", 0.99) and not same("1.73", 3 ** 0.5 + 0.01) and not same("1", True)
    assert not same("False", 0) and not same("256", 512) and not same('"cnn"', "resnet18")
    with pytest.raises(AssertionError, match="which the config has not"):
        config_value("sac.gama")


# ---- docs/cifar_table.png ------------------------------------------------------------------------
def test_the_cifar_figure_shows_the_tables_numbers():
    """The PNG keeps the rows it drew (its Description); they must be the table's today: redraw
    with `python benchmarks/cifar.py figure` after editing the table."""
    from PIL import Image
    rows = cifar.doc_table()
    with Image.open(ROOT / "docs" / "cifar_table.png") as png:
        drawn = json.loads(png.text["Description"])
    assert drawn == rows
    methods = [r["method"] for r in rows]
    assert len(methods) == len(set(methods))  # one bar per row, none twice
    assert sum("random init" in m for m in methods) == 1


def test_the_table_parser_reads_means_spreads_and_gaps(tmp_path):
    md = tmp_path / "t.md"
    md.write_text(f"text\n\n{cifar.DOC_HEADER}\n|---|---|---|---|\n"
                  "| supervised ¹ | 3 | 70.3 ± 0.0 | – |\n| raw pixels | 1 | 42.2 | 46.9 |\n\n"
                  "after\n", encoding="utf-8")
    assert cifar.doc_table(md) == [
        dict(method="supervised", seeds=3, linear=70.3, linear_std=0.0, knn=None, knn_std=None),
        dict(method="raw pixels", seeds=1, linear=42.2, linear_std=None, knn=46.9, knn_std=None)]
    png = tmp_path / "t.png"
    assert len(cifar.draw_doc_table(md, png)) == 2
    from PIL import Image
    with Image.open(png) as image:
        assert json.loads(image.text["Description"])[0]["linear"] == 70.3
    md.write_text("no table\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no table"):
        cifar.doc_table(md)
