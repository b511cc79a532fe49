"""Render the book site into _book/, and say which renderer ran.

With Quarto on the PATH this runs `quarto render` (the project is the Quarto book in _quarto.yml), then
points its pages' MathJax at a local copy. Without it (Quarto is not on PyPI) it builds the same book with
Sphinx, MyST-NB and the Sphinx Book Theme (book/conf.py): the chapters of _quarto.yml in its order,
grouped by part in the sidebar, with full-text search, previous/next links, a local MathJax 3 (no CDN),
and a "Hide code" switch.

Neither renderer executes a chapter: pages show the outputs stored by `make execute`. Before Sphinx sees a
notebook, its `#| hide` cells are dropped and every nbdev directive line (`#| export`, ...) is stripped, as
nbdev's own docs do. The copies go to build/book/src with book/conf.py; the sources are not touched.
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, tarfile, tempfile
from pathlib import Path
import nbformat, yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / '_book'
BUILD = ROOT / 'build' / 'book'           # staged sources, doctrees and static files (make clean removes build/)
MATHJAX = 'mathjax@3.2.2'                 # from the npm registry, unpacked once into build/


def chapter_list(cfg: dict) -> list[tuple[str | None, str]]:
    "(part title or None, path) for every chapter and appendix of a Quarto book config, in reading order."
    out = []
    def walk(items, part=None):
        for it in items or []:
            if isinstance(it, str): out.append((part, it))
            elif isinstance(it, dict) and 'chapters' in it: walk(it['chapters'], it.get('part'))
            elif isinstance(it, dict) and 'href' in it: out.append((part, it['href']))
    walk(cfg['book'].get('chapters')); walk(cfg['book'].get('appendices'), 'Appendices')
    return out


DIRECTIVE = re.compile(r'^\s*#\|.*(\n|$)', re.M)
DROPPED = re.compile(r'^\s*#\|\s*(hide|default_exp)\b', re.M)
WIDGET = 'application/vnd.jupyter.widget-view+json'   # a live widget (a progress bar) is nothing on a static page


def clean_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    "The notebook a reader sees: `#| hide` and `#| default_exp` cells dropped, other directive lines stripped."
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            if DROPPED.search(c.source): continue
            c.source = DIRECTIVE.sub('', c.source).strip('\n')
            for o in c.get('outputs', []):
                if WIDGET in o.get('data', {}): del o['data'][WIDGET]
            c.outputs = [o for o in c.get('outputs', []) if o.get('data', True)]
            if not c.source and not c.outputs: continue
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop('widgets', None)
    # every chapter is Python: a notebook saved without language_info would leave its code unhighlighted
    nb.metadata.setdefault('language_info', {'name': 'python', 'pygments_lexer': 'ipython3'})
    return nb


def doc_name(path: str) -> str:
    "The page name of a chapter: nbs/05_mlp.ipynb -> 05_mlp (chapters link to each other by file name)."
    return Path(path).stem


def toctree(chapters: list[tuple[str | None, str]]) -> str:
    "MyST toctrees for every chapter after the preface, one per part, captioned with the part's title (the sidebar)."
    groups: list[tuple[str | None, list[str]]] = []
    for part, path in chapters[1:]:
        if not groups or groups[-1][0] != part: groups.append((part, []))
        groups[-1][1].append(doc_name(path))
    return '\n\n'.join('```{toctree}\n:hidden:\n' + (f':caption: {part}\n' if part else '') + '\n'
                       + '\n'.join(docs) + '\n```' for part, docs in groups)


def stage(cfg: dict, chapters: list[tuple[str | None, str]], src: Path) -> None:
    """A self-contained Sphinx project in src/: book/conf.py, book/_static, the book's titles (book.json), and the
    cleaned chapters, flat, the first one (the preface) as index with the toctrees."""
    if src.exists(): shutil.rmtree(src)
    shutil.copytree(ROOT / 'book', src, ignore=shutil.ignore_patterns('requirements.txt', '__pycache__'))
    (src / 'book.json').write_text(json.dumps({k: cfg['book'].get(k, '') for k in ('title', 'author')}))
    for i, (_, path) in enumerate(chapters):
        p = ROOT / path
        name = 'index' if i == 0 else doc_name(path)
        if p.suffix == '.ipynb':
            nb = clean_notebook(nbformat.read(p, as_version=4))
            if i == 0: nb.cells.append(nbformat.v4.new_markdown_cell(toctree(chapters)))
            nbformat.write(nb, src / f'{name}.ipynb')
        elif p.suffix == '.md':
            text = p.read_text(encoding='utf-8')
            (src / f'{name}.md').write_text(text + ('\n\n' + toctree(chapters) if i == 0 else ''), encoding='utf-8')
        else:
            sys.exit(f"render_book: {path}: only .ipynb and .md chapters are supported")


def fetch_mathjax(static: Path, builds=('tex-mml-chtml.js',)) -> Path:
    """MathJax 3 (the npm package) copied into static/mathjax, so math is typeset with no request off the machine:
    the combined `builds` named and what they load on demand (TeX extensions, CHTML fonts, menu, accessibility).

    The package is fetched once with `npm pack` (npm checks its integrity) and kept unpacked in build/."""
    cache = BUILD.parent / MATHJAX.replace('@', '-')
    if not (cache / 'es5' / 'tex-mml-chtml.js').exists():
        npm = shutil.which('npm')
        if not npm:
            sys.exit(f"render_book: the book typesets math with a local MathJax, fetched with npm; install Node.js's npm "
                     f"(apt-get install npm), or unpack the npm package {MATHJAX} into {cache}")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([npm, 'pack', MATHJAX, '--silent', '--pack-destination', tmp], check=True,
                           stdout=subprocess.DEVNULL)
            [tgz] = Path(tmp).glob('mathjax-*.tgz')
            with tarfile.open(tgz) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith('package/es5/') and m.isfile()]
                for m in members: m.name = m.name[len('package/'):]
                safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}   # Python >= 3.10.12
                tar.extractall(Path(tmp) / 'mj', members=members, **safe)
            if cache.exists(): shutil.rmtree(cache)
            shutil.move(Path(tmp) / 'mj', cache)
        print(f"  MathJax: {MATHJAX} unpacked into {cache.relative_to(ROOT)}")
    dest = static / 'mathjax'
    if dest.exists(): shutil.rmtree(dest)
    for k in (*builds, 'input', 'output/chtml', 'ui', 'a11y', 'sre'):
        if not (cache / 'es5' / k).exists(): sys.exit(f"render_book: {MATHJAX} has no es5/{k}")
        (dest / k).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (cache / 'es5' / k).is_dir() else shutil.copy2)(cache / 'es5' / k, dest / k)
    return dest


CDN_MATHJAX = re.compile(r'src="https?://[^"]*mathjax[^"]*?/es5/([\w.-]+\.js)[^"]*"')

def localize_mathjax(site: Path) -> int:
    "Point every page's MathJax script at a local copy in site/mathjax (Quarto links a CDN's); returns the pages changed."
    changed, builds = 0, set()
    for page in site.rglob('*.html'):
        text = page.read_text(encoding='utf-8')
        rel = Path(os.path.relpath(site / 'mathjax', page.parent)).as_posix()
        new = CDN_MATHJAX.sub(lambda m: builds.add(m.group(1)) or f'src="{rel}/{m.group(1)}"', text)
        if new != text:
            page.write_text(new, encoding='utf-8'); changed += 1
    if builds: fetch_mathjax(site, tuple(sorted(builds)))
    return changed


def render_sphinx(strict: bool = True) -> Path:
    "Stage the chapters of _quarto.yml and build the Sphinx book into _book/; warnings fail the build when strict."
    cfg = yaml.safe_load((ROOT / '_quarto.yml').read_text())
    chapters = chapter_list(cfg)
    missing = [p for _, p in chapters if not (ROOT / p).exists()]
    if missing: sys.exit(f"render_book: _quarto.yml lists chapters that do not exist: {', '.join(missing)}")
    src = BUILD / 'src'
    stage(cfg, chapters, src)
    fetch_mathjax(src / '_static')
    html = BUILD / 'html'                # built inside build/ (MyST-NB writes beside its output folder), then moved
    for d in (html, BUILD / 'doctrees'):
        if d.exists(): shutil.rmtree(d)
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-d', str(BUILD / 'doctrees'), str(src), str(html)]
    if strict: cmd[5:5] = ['-W', '--keep-going']
    subprocess.run(cmd, cwd=ROOT, check=True)
    if OUT.exists(): shutil.rmtree(OUT)
    shutil.move(html, OUT)
    for _, path in chapters:
        print(f"  {'index' if path == chapters[0][1] else doc_name(path)}.html".ljust(30) + path)
    return OUT / 'index.html'


def main(argv=None):
    ap = argparse.ArgumentParser(description='Render the book into _book/')
    ap.add_argument('--renderer', choices=['auto', 'quarto', 'sphinx'], default='auto')
    ap.add_argument('--no-strict', action='store_true', help='let Sphinx warnings pass (by default they fail the build)')
    args = ap.parse_args(argv)
    quarto = shutil.which('quarto')
    if args.renderer == 'quarto' or (args.renderer == 'auto' and quarto):
        if not quarto: sys.exit("render_book: --renderer quarto, but quarto is not on the PATH")
        print(f"renderer: Quarto ({quarto})", flush=True)
        subprocess.run([quarto, 'render'], cwd=ROOT, check=True)
        print(f"  MathJax: {localize_mathjax(OUT)} pages point at the local copy in _book/mathjax")
        print(f"book written to {OUT / 'index.html'} by Quarto")
        return
    print("renderer: Sphinx + MyST-NB + Sphinx Book Theme (quarto is not on the PATH)", flush=True)
    index = render_sphinx(strict=not args.no_strict)
    print(f"book written to {index.relative_to(ROOT)} by Sphinx")


if __name__ == '__main__':
    main()
