"""The book's plumbing: the chapter list, the Sphinx book renderer, the browser check's bookkeeping, the
twin/export check, and the Makefile's set-up stamp."""
import subprocess, sys
from pathlib import Path
import nbformat, yaml, pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import render_book, check_sync, book_check, execute  # noqa: E402


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
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'# {title}\n\nSome $x^2$ math.'), *cells],
                                    metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                                              'language_info': {'name': 'python'}})


def _code(source, *outputs):
    c = nbformat.v4.new_code_cell(source)
    c.outputs = list(outputs)
    return c


def test_clean_notebook_hides_what_nbdev_hides():
    shown = _code('#| export\n#| slow\ndef f(x): return x\nprint(f(1))', nbformat.v4.new_output('stream', name='stdout', text='1\n'))
    hidden = _code('#| hide\nfrom fastcore.test import test_eq')
    default_exp = _code('#| default_exp core')
    widget = _code('for _ in tqdm(range(3)): pass', nbformat.v4.new_output(
        'display_data', data={'application/vnd.jupyter.widget-view+json': {'model_id': 'x'}}))
    nb = render_book.clean_notebook(_nb('T', shown, hidden, default_exp, widget))
    sources = [c.source for c in nb.cells]
    assert sources[1] == 'def f(x): return x\nprint(f(1))'          # directive lines stripped, code kept
    assert not any('fastcore' in s or 'default_exp' in s for s in sources)
    assert nb.cells[1].outputs[0].text == '1\n'                      # outputs kept
    assert nb.cells[2].outputs == []                                 # a widget is nothing on a static page
    assert len(nb.cells) == 3


def test_toctree_groups_chapters_by_part():
    chapters = [(None, 'nbs/index.ipynb'), ('Part A', 'nbs/01_a.ipynb'), ('Part A', 'nbs/02_b.ipynb'),
                ('Part B', 'nbs/03_c.ipynb'), ('Appendices', 'DESIGN.md')]
    toc = render_book.toctree(chapters)
    blocks = toc.split('```{toctree}')[1:]
    assert len(blocks) == 3
    assert ':caption: Part A' in blocks[0] and '01_a\n02_b' in blocks[0]
    assert ':caption: Part B' in blocks[1] and '03_c' in blocks[1]
    assert ':caption: Appendices' in blocks[2] and 'DESIGN' in blocks[2]
    assert all(':hidden:' in b for b in blocks)                      # the sidebar shows them, not the preface


@pytest.fixture
def tiny_book(tmp_path, monkeypatch):
    "A two-part book with a cross-chapter link, a hidden cell and math, and a stand-in MathJax in build/'s cache."
    (tmp_path / 'nbs').mkdir()
    code = _code('#| export\nx = 1\nprint(x)', nbformat.v4.new_output('stream', name='stdout', text='1\n'))
    hidden = _code('#| hide\nfrom fastcore.test import test_eq')
    link = nbformat.v4.new_markdown_cell('See [chapter B](02_b.ipynb). We minimise\n$$L=\\frac12 x^2,$$\n'
                                         '(the $\\tfrac12$ cancels the 2).')
    for name, title in [('index', 'Preface'), ('01_a', 'Chapter A'), ('02_b', 'Chapter B')]:
        nbformat.write(_nb(title, link, code, hidden), tmp_path / 'nbs' / f'{name}.ipynb')
    (tmp_path / '_quarto.yml').write_text(yaml.safe_dump({'book': {'title': 'Tiny Book', 'author': 'A', 'chapters': [
        'nbs/index.ipynb', {'part': 'Part P', 'chapters': ['nbs/01_a.ipynb']},
        {'part': 'Part Q', 'chapters': ['nbs/02_b.ipynb']}]}}))
    (tmp_path / 'book').symlink_to(ROOT / 'book')
    mj = tmp_path / 'build' / render_book.MATHJAX.replace('@', '-') / 'es5'
    for d in ('input/tex', 'output/chtml', 'ui', 'a11y', 'sre'): (mj / d).mkdir(parents=True)
    for build in ('tex-mml-chtml.js', 'tex-chtml-full.js'): (mj / build).write_text('/* stand-in */')
    monkeypatch.setattr(render_book, 'ROOT', tmp_path)
    monkeypatch.setattr(render_book, 'OUT', tmp_path / '_book')
    monkeypatch.setattr(render_book, 'BUILD', tmp_path / 'build' / 'book')
    return tmp_path


def test_sphinx_renders_parts_navigation_math_and_links(tiny_book):
    index = render_book.render_sphinx()
    assert index == tiny_book / '_book' / 'index.html'
    nav = index.read_text().split('bd-docs-nav', 1)[1]                                  # the sidebar
    assert nav.index('Part P') < nav.index('01_a.html') < nav.index('Part Q') < nav.index('02_b.html')  # by part
    a = (tiny_book / '_book' / '01_a.html').read_text()
    assert 'href="index.html"' in a and 'href="02_b.html"' in a                          # previous / next
    assert 'href="#chapter-b"' not in a and 'href="02_b.html"' in a                      # cross-chapter link resolved
    assert '.ipynb"' not in a
    article = a.split('<article', 1)[1].split('</article>', 1)[0]
    assert '$$' not in article and r'\[L=\frac12 x^2,\]' in article                 # $$ in a paragraph is display math
    assert 'src="_static/mathjax/tex-mml-chtml.js' in a and 'cdn' not in a.lower()      # local MathJax, no CDN
    assert (tiny_book / '_book' / '_static' / 'mathjax' / 'tex-mml-chtml.js').exists()
    assert '#| export' not in a and 'fastcore.test' not in a and 'print' in a           # directives and hidden cells gone
    assert 'code-fold.js' in a and (tiny_book / '_book' / 'searchindex.js').exists()    # fold switch, search index
    assert not (tiny_book / 'jupyter_execute').exists(), "the build writes nothing beside the sources"
    assert 'Some $x^2$' in (tiny_book / 'nbs' / '01_a.ipynb').read_text() and \
        '#| hide' in (tiny_book / 'nbs' / '01_a.ipynb').read_text()                    # the sources are untouched


def test_quarto_pages_get_a_local_mathjax(tiny_book):
    site = tiny_book / '_book'; (site / 'nbs').mkdir(parents=True)
    cdn = '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml-full.js" type="text/javascript"></script>'
    for page in ('index.html', 'nbs/01_a.html'): (site / page).write_text(f'<html><head>{cdn}</head></html>')
    (site / 'nbs' / 'plain.html').write_text('<p>no math</p>')
    assert render_book.localize_mathjax(site) == 2
    assert 'src="mathjax/tex-chtml-full.js"' in (site / 'index.html').read_text()
    assert 'src="../mathjax/tex-chtml-full.js"' in (site / 'nbs' / '01_a.html').read_text()
    assert (site / 'mathjax' / 'tex-chtml-full.js').exists() and (site / 'mathjax' / 'output' / 'chtml').is_dir()
    assert render_book.localize_mathjax(site) == 0                       # nothing left to point elsewhere


def test_render_refuses_missing_chapter(tiny_book):
    (tiny_book / '_quarto.yml').write_text(yaml.safe_dump({'book': {'title': 'T', 'chapters': ['nbs/nope.ipynb']}}))
    with pytest.raises(SystemExit, match='nope.ipynb'):
        render_book.render_sphinx()


def test_mathjax_without_npm_says_what_to_do(tiny_book, monkeypatch):
    monkeypatch.setattr(render_book, 'BUILD', tiny_book / 'elsewhere' / 'book')     # nothing cached there
    monkeypatch.setattr(render_book.shutil, 'which', lambda name: None)
    with pytest.raises(SystemExit, match='npm'):
        render_book.fetch_mathjax(tiny_book / 'static')


def test_browser_check_flags_errors_and_requests_off_the_machine():
    base = 'http://127.0.0.1:8000/'
    ev = lambda m, **p: {'method': m, 'params': p}
    events = [
        ev('Network.requestWillBeSent', request={'url': base + 'a.html'}),
        ev('Network.requestWillBeSent', request={'url': 'data:image/png;base64,AAAA'}),
        ev('Network.requestWillBeSent', request={'url': 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js'}),
        ev('Network.responseReceived', response={'status': 404, 'url': base + 'missing.png'}),
        ev('Runtime.consoleAPICalled', type='error', args=[{'value': 'boom'}]),
        ev('Runtime.consoleAPICalled', type='log', args=[{'value': 'fine'}]),
    ]
    problems, n = book_check.problems_of(events, base)
    assert n == 3
    assert problems == ['request leaves the machine: https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js',
                        f'HTTP 404: {base}missing.png', 'console error: boom']
    assert book_check.problems_of(events[:2], base) == ([], 2)


@pytest.mark.parametrize('path, found', [('/work/main/.venv/lib/x', True), ('/root/tensorflow_datasets', True),
                                         ('accuracy 0.98 after 3 epochs', False)])
def test_local_paths_are_recognised(path, found):
    assert bool(book_check.LOCAL_PATH.search(path)) == found


def test_execute_names_stored_warnings_and_local_paths():
    out = lambda **kw: nbformat.v4.new_output(**kw)
    nb = _nb('T', _code('a', out(output_type='stream', name='stderr', text='WARNING:absl:OpenCV is not installed.\n')),
             _code('b', out(output_type='stream', name='stdout', text='cached in /root/.cache/x.npz\n')),
             _code('c', out(output_type='execute_result', data={'text/plain': "PosixPath('/home/me/data')"}, execution_count=1)),
             _code('d', out(output_type='stream', name='stdout', text='test accuracy 0.990\n')))
    notes = execute.stored_noise(nb)
    assert [n.split(':')[0] for n in notes] == ['cell 1', 'cell 2', 'cell 3']
    assert 'stored warning: WARNING:absl:OpenCV' in notes[0] and 'local path' in notes[1] and 'local path' in notes[2]


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


def _stamp(root: Path) -> str:
    "The set-up stamp the Makefile computes in `root` (from make's printed database)."
    out = subprocess.run(['make', '-s', '-n', '-C', str(root), '-p', 'help'], capture_output=True, text=True).stdout
    return next(l.split(':=', 1)[1].strip() for l in out.splitlines() if l.startswith('STAMP :='))


def test_setup_stamp_follows_content_not_mtime(tmp_path):
    for f in ('Makefile', 'setup.py', 'settings.ini', 'pyproject.toml'):
        (tmp_path / f).write_bytes((ROOT / f).read_bytes())
    (tmp_path / 'book').mkdir(); (tmp_path / 'book' / 'requirements.txt').write_bytes((ROOT / 'book' / 'requirements.txt').read_bytes())
    stamp = _stamp(tmp_path)
    assert stamp.startswith('.venv/.installed-')
    py = tmp_path / 'pyproject.toml'
    py.write_text(py.read_text())                                    # what nbdev_export does: same text, new mtime
    assert _stamp(tmp_path) == stamp
    original = py.read_text()
    py.write_text(original.replace('long tests', 'long-running tests'))    # a pytest marker: not an install input
    assert _stamp(tmp_path) == stamp
    py.write_text(original.replace('setuptools>=64', 'setuptools>=65'))     # the build system: an install input
    assert _stamp(tmp_path) != stamp
    py.write_text(original)
    (tmp_path / 'book' / 'requirements.txt').write_text('sphinx\n')
    assert _stamp(tmp_path) != stamp


def test_module_docstrings_are_whole_sentences_about_the_module():
    """nbdev makes a module's docstring from the first `> ` line of its chapter's title cell: a description that
    wraps onto a second `> ` line is cut there, and a chapter's blurb ("Chapter 05, part 2: ...") says nothing of
    the module. Every exported module must start with one whole sentence of its own."""
    import ast
    bad = []
    for path in sorted((ROOT / 'dl_from_scratch').rglob('*.py')):
        if path.name in ('__init__.py', '_modidx.py') or 'datasets' in path.parts: continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or not doc.rstrip().endswith(('.', ')')) or doc.startswith('Chapter '):
            bad.append(f"{path.relative_to(ROOT)}: {doc!r}")
    assert not bad, "module docstrings cut mid-sentence or describing a chapter:\n" + '\n'.join(bad)
    # the package's own: nbdev puts `__version__` above everything unless the exported code holds the line
    init = ast.parse((ROOT / 'dl_from_scratch' / '__init__.py').read_text())
    assert ast.get_docstring(init), "dl_from_scratch/__init__.py: the docstring must be its first statement"
