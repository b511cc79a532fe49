"""The book's plumbing: the chapter list, the nbconvert fallback renderer, the twin/export check."""
import sys
from pathlib import Path
import nbformat, yaml, pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import render_book, check_sync  # noqa: E402


def test_quarto_lists_every_notebook_once_in_order():
    cfg = yaml.safe_load((ROOT / '_quarto.yml').read_text())
    listed = [p for _, p in render_book.chapter_list(cfg)]
    nbs = sorted(f'nbs/{p.name}' for p in (ROOT / 'nbs').glob('*.ipynb'))
    assert sorted(p for p in listed if p.endswith('.ipynb')) == nbs, "every notebook is a chapter, and every chapter exists"
    assert len(listed) == len(set(listed))
    assert listed[0] == 'nbs/index.ipynb'
    chapters = [p for p in listed if p.endswith('.ipynb') and p != 'nbs/index.ipynb']
    assert chapters == sorted(chapters), "chapters are listed in their numbered order"


def _nb(title, *cells):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'# {title}\n\nSome $x^2$ math.'), *cells])


def test_fallback_renders_index_chapters_and_navigation(tmp_path, monkeypatch):
    (tmp_path / 'nbs').mkdir()
    code = nbformat.v4.new_code_cell('#| export\nx = 1\nprint(x)')
    code.outputs = [nbformat.v4.new_output('stream', name='stdout', text='1\n')]
    hidden = nbformat.v4.new_code_cell('#| hide\nfrom fastcore.test import test_eq')
    for name, title in [('index', 'Preface'), ('01_a', 'Chapter A'), ('02_b', 'Chapter B')]:
        nbformat.write(_nb(title, code, hidden), tmp_path / 'nbs' / f'{name}.ipynb')
    (tmp_path / '_quarto.yml').write_text(yaml.safe_dump({'book': {'title': 'T', 'chapters': [
        'nbs/index.ipynb', {'part': 'P', 'chapters': ['nbs/01_a.ipynb', 'nbs/02_b.ipynb']}]}}))
    monkeypatch.setattr(render_book, 'ROOT', tmp_path); monkeypatch.setattr(render_book, 'OUT', tmp_path / '_book')
    index = render_book.render_fallback()
    html = index.read_text()
    assert html.index('href="01_a.html"') < html.index('href="02_b.html"')      # every chapter, in order
    a = (tmp_path / '_book' / '01_a.html').read_text()
    assert 'href="index.html"' in a and 'href="02_b.html"' in a                # previous / next
    assert 'mathjax' in a.lower()                                              # math is typeset
    assert '#| export' not in a and 'fastcore.test' not in a                   # nbdev directives and hidden cells gone
    assert 'print' in a and 'Hide code' in a


def test_fallback_refuses_missing_chapter(tmp_path, monkeypatch):
    (tmp_path / '_quarto.yml').write_text(yaml.safe_dump({'book': {'title': 'T', 'chapters': ['nbs/nope.ipynb']}}))
    monkeypatch.setattr(render_book, 'ROOT', tmp_path); monkeypatch.setattr(render_book, 'OUT', tmp_path / '_book')
    with pytest.raises(SystemExit, match='nope.ipynb'):
        render_book.render_fallback()


def test_twin_check_detects_disagreement(tmp_path, monkeypatch):
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    (tmp_path / 'jupytext.toml').write_text((ROOT / 'jupytext.toml').read_text())
    nbformat.write(_nb('X', nbformat.v4.new_code_cell('a = 1')), nbs / 'x.ipynb')
    monkeypatch.setattr(check_sync, 'NBS', nbs); monkeypatch.setattr(check_sync, 'ROOT', tmp_path)
    (nbs / 'x.py').write_text(check_sync.twin_text(nbs / 'x.ipynb'))
    assert check_sync.check_twins() == []
    (nbs / 'x.py').write_text(check_sync.twin_text(nbs / 'x.ipynb').replace('a = 1', 'a = 2'))
    assert any('disagrees' in p for p in check_sync.check_twins())
    (nbs / 'x.py').unlink()
    assert any('no jupytext twin' in p for p in check_sync.check_twins())
