"""Render the book site into _book/.

With Quarto on the PATH this runs `quarto render` (the project is the Quarto book in _quarto.yml).
Without it (Quarto is not on PyPI, so an offline machine cannot install it) it renders the same
chapter list with nbconvert: one HTML page per chapter, with MathJax math, embedded figures, a
code-folding toggle, previous/next links, and an index.html that links every chapter in order.
It prints which renderer ran.
"""
from __future__ import annotations
import argparse, html, re, shutil, subprocess, sys
from pathlib import Path
import nbformat, yaml
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / '_book'


def chapter_list(cfg: dict) -> list[tuple[str | None, str]]:
    "(part title or None, path) for every chapter and appendix, in reading order."
    out = []
    def walk(items, part=None):
        for it in items or []:
            if isinstance(it, str): out.append((part, it))
            elif isinstance(it, dict) and 'chapters' in it: walk(it['chapters'], it.get('part'))
            elif isinstance(it, dict) and 'href' in it: out.append((part, it['href']))
    walk(cfg['book'].get('chapters')); walk(cfg['book'].get('appendices'), 'Appendices')
    return out


DIRECTIVE = re.compile(r'^\s*#\|.*$\n?', re.M)

def load_notebook(path: Path) -> nbformat.NotebookNode:
    "A chapter as a notebook, with nbdev directives stripped and `#| hide` cells dropped (as nbdev's docs do)."
    if path.suffix == '.md':
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(path.read_text(encoding='utf-8'))])
    nb = nbformat.read(path, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            if re.search(r'^\s*#\|\s*(hide|default_exp)\b', c.source, re.M) and not c.get('outputs'):
                continue
            c.source = DIRECTIVE.sub('', c.source).strip('\n')
            if not c.source and not c.get('outputs'): continue
        cells.append(c)
    nb.cells = cells
    return nb


def title_of(nb) -> str:
    for c in nb.cells:
        if c.cell_type == 'markdown':
            m = re.search(r'^#\s+(.+)$', c.source, re.M)
            if m: return m.group(1).replace('`', '').strip()
    return 'Untitled'


STYLE = """
<style>
 .book-nav{display:flex;justify-content:space-between;gap:1em;font:15px/1.4 system-ui,sans-serif;
   padding:.6em 1.2em;background:#f4f6f8;border-bottom:1px solid #dde;position:sticky;top:0;z-index:10}
 .book-nav.bottom{border-top:1px solid #dde;border-bottom:none;position:static;margin-top:2em}
 .book-nav a{text-decoration:none;color:#1a5fb4;flex:1} .book-nav a:last-child{text-align:right}
 .book-nav .mid{text-align:center;white-space:nowrap;flex:0 0 auto}
 .book-nav button{font:inherit;cursor:pointer;border:1px solid #bbc;border-radius:4px;background:#fff}
 body.code-folded .jp-Cell-inputWrapper, body.code-folded .jp-InputArea{display:none}
 .jp-Notebook{max-width:980px;margin:auto}
 .book-toc{max-width:860px;margin:1.5em auto;font:16px/1.6 system-ui,sans-serif}
 .book-toc h2{margin-bottom:.2em} .book-toc ol{margin-top:.2em}
 .book-toc a{color:#1a5fb4;text-decoration:none} .book-toc a:hover{text-decoration:underline}
</style>
<script>
 function toggleCode(){document.body.classList.toggle('code-folded');
   for (const b of document.querySelectorAll('.fold-btn'))
     b.textContent = document.body.classList.contains('code-folded') ? 'Show code' : 'Hide code';}
</script>
"""

def nav(pages, i, where='top') -> str:
    prev = f'<a href="{pages[i-1][0]}">&larr; {html.escape(pages[i-1][1])}</a>' if i > 0 else '<span></span>'
    nxt = f'<a href="{pages[i+1][0]}">{html.escape(pages[i+1][1])} &rarr;</a>' if i + 1 < len(pages) else '<span></span>'
    mid = '<a href="index.html">Contents</a> &middot; <button class="fold-btn" onclick="toggleCode()">Hide code</button>'
    return f'<nav class="book-nav {where}">{prev}<span class="mid">{mid}</span>{nxt}</nav>'


def local_mathjax() -> str:
    "Copy MathJax (shipped by jupyter-server-mathjax) into _book/ so math renders offline; else use the CDN."
    try:
        import jupyter_server_mathjax
    except ImportError:
        print("  MathJax: from the CDN (pip install jupyter-server-mathjax to ship it with the site)")
        return 'https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=TeX-AMS_CHTML-full,Safe'
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / 'static', OUT / 'mathjax')
    return 'mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe'

# jupyter-server-mathjax ships only the STIX-Web fonts: tell MathJax to use them.
STIX = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
        'preferredFont: null, webFont: "STIX-Web", imageFont: null}, SVG: {font: "STIX-Web"}});</script>')


def render_fallback() -> Path:
    cfg = yaml.safe_load((ROOT / '_quarto.yml').read_text())
    chapters = chapter_list(cfg)
    missing = [p for _, p in chapters if not (ROOT / p).exists()]
    if missing: sys.exit(f"render_book: _quarto.yml lists chapters that do not exist: {', '.join(missing)}")
    if OUT.exists(): shutil.rmtree(OUT)
    OUT.mkdir()
    mathjax = local_mathjax()
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                            mathjax_url=mathjax)
    nbs = [(part, path, load_notebook(ROOT / path)) for part, path in chapters]
    pages = [('index.html' if Path(p).stem == 'index' else Path(p).stem + '.html', title_of(nb)) for _, p, nb in nbs]
    book = cfg['book']
    toc, last_part = [f'<div class="book-toc"><h1>{html.escape(book["title"])}</h1>'
                      f'<p><em>{html.escape(book.get("subtitle", ""))}</em></p><h2>Contents</h2><ol>'], None
    for (part, path, _), (href, title) in zip(nbs, pages):
        if part != last_part:
            if last_part is not None or part: toc.append(f'</ol><h3>{html.escape(part or "")}</h3><ol>')
            last_part = part
        toc.append(f'<li><a href="{href}">{"Preface" if href == "index.html" else html.escape(title)}</a></li>')
    toc.append('</ol></div>')
    for i, ((part, path, nb), (href, title)) in enumerate(zip(nbs, pages)):
        body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': title}})
        top = nav(pages, i) + (''.join(toc) if href == 'index.html' else '')
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + top, body, count=1)
        body = body.replace('</body>', nav(pages, i, 'bottom') + '</body>', 1)
        body = body.replace('</head>', STYLE + (STIX if mathjax.startswith('mathjax/') else '') + '</head>', 1)
        (OUT / href).write_text(body, encoding='utf-8')
        print(f"  {href:<28} {title}")
    return OUT / 'index.html'


def main(argv=None):
    ap = argparse.ArgumentParser(description='Render the book into _book/')
    ap.add_argument('--renderer', choices=['auto', 'quarto', 'nbconvert'], default='auto')
    args = ap.parse_args(argv)
    quarto = shutil.which('quarto')
    if args.renderer == 'quarto' or (args.renderer == 'auto' and quarto):
        if not quarto: sys.exit("render_book: --renderer quarto, but quarto is not on the PATH")
        print(f"renderer: Quarto ({quarto})", flush=True)
        subprocess.run([quarto, 'render'], cwd=ROOT, check=True)
        print(f"book written to {OUT / 'index.html'} by Quarto")
        return
    print("renderer: nbconvert fallback (quarto is not on the PATH; install Quarto for the full book site)", flush=True)
    index = render_fallback()
    print(f"book written to {index} by the nbconvert fallback")


if __name__ == '__main__':
    main()
