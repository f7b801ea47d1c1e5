"""The documentation: README size, generated results current, relative links resolve."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "benchmarks" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    return [README] + sorted(DOCS.rglob("*.md"))


def test_readme_is_a_short_user_guide():
    assert README.stat().st_size <= 15 * 1024, f"README.md is {README.stat().st_size} bytes; move detail to docs/"


def test_generated_docs_are_current():
    """docs/results.md and every results block in README/docs equal what the generator writes."""
    stale = [str(p.relative_to(ROOT)) for p, text in _generator().outputs().items() if p.read_text() != text]
    assert not stale, f"out of date (edited by hand, or a JSON changed): {stale}; run `make docs`"


def test_readme_headline_block_is_filled():
    text = README.read_text()
    m = re.search(r"<!-- results:headline -->\n(.*?)<!-- /results:headline -->", text, re.S)
    assert m and m.group(1).count("\n|") >= 5, "README has no generated headline table"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_relative_links_resolve():
    bad = []
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_every_method_has_a_page():
    for name in ("sobp", "pg", "disp", "mrp", "unstructured", "structured-baselines"):
        assert (DOCS / "methods" / f"{name}.md").exists()


def test_generator_renders_unknown_and_broken_files(tmp_path, monkeypatch):
    """A JSON nobody wrote a renderer for still appears; a known file with an unexpected shape falls back."""
    gen = _generator()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    (results / "new_bench.json").write_text(
        json.dumps(
            {
                "benchmark": "new",
                "protocol": {"seqlen": 512},
                "command": "python benchmarks/new.py --x 1",
                "runs": [{"method": "foo", "setting": "0.3", "ppl": 12.3456}],
            }
        )
    )
    (results / "structured_speed_repeats.json").write_text(json.dumps({"runs": [{"label": "only a label"}]}))
    (results / "half_written.json").write_text('{"runs": [')
    monkeypatch.setattr(gen, "RESULTS", results)
    text, headline, notes = gen.build(gen.load_results())
    assert "## new_bench.json (generic rendering)" in text
    assert "python benchmarks/new.py --x 1" in text and "12.3456" in text and "seqlen = 512" in text
    assert any(n.startswith("new_bench.json") for n in notes)
    assert any(n.startswith("structured_speed_repeats.json") and "failed" in n for n in notes)
    assert "only a label" in text
    assert "## Skipped files" in text and "half_written.json" in text
    assert "| `sobp` |" in headline


def test_generator_names_a_missing_headline_file(tmp_path, monkeypatch):
    gen = _generator()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    (results / "pg_seqlen512_lr001.json").unlink()
    monkeypatch.setattr(gen, "RESULTS", results)
    with pytest.raises(SystemExit, match="pg_seqlen512_lr001.json"):
        gen.build(gen.load_results())


def test_generator_refuses_an_unknown_block(tmp_path):
    gen = _generator()
    with pytest.raises(SystemExit, match="no-such-table"):
        gen.fill_blocks("<!-- results:no-such-table -->\n<!-- /results:no-such-table -->", {}, "page.md")
