"""Sphinx configuration of the book site where Quarto is absent (tools/render_book.py, `make book`).

render_book.py copies this folder to build/book/src, beside the cleaned chapter copies (in the order and
parts of _quarto.yml), the book's titles (book.json) and MathJax (_static/mathjax). Notebooks are never
executed here: pages show their stored outputs.
"""
import json
from pathlib import Path

book = json.loads((Path(__file__).parent / 'book.json').read_text())

project = html_title = book['title']
author = book['author']
copyright = f"2026 onwards, {author}"

extensions = ['myst_nb']
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3
myst_dmath_double_inline = True    # $$...$$ inside a paragraph is display math, as in Quarto (pandoc)
nb_execution_mode = 'off'          # stored outputs only
nb_ipywidgets_js = {}              # no require.js or widget manager from a CDN
nb_merge_streams = True            # one block per cell for stdout

# Math: MathJax 3 from the npm package, copied into _static/mathjax by render_book.py; no CDN.
mathjax_path = 'mathjax/tex-mml-chtml.js'
mathjax3_config = {'tex': {'tags': 'ams'}}

html_theme = 'sphinx_book_theme'
html_static_path = ['_static']
exclude_patterns = ['_static', 'book.json', 'requirements.txt']
html_css_files = ['code-fold.css']
html_js_files = ['code-fold.js']
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    'home_page_in_toc': False,         # the book's title at the top of the sidebar leads to the preface
    'show_navbar_depth': 1,
    'show_toc_level': 2,               # "On this page": sections and subsections
    'use_download_button': False,
    'use_fullscreen_button': False,
    'show_prev_next': True,
    'navigation_with_keys': False,
    'navbar_persistent': [],           # one search field, in the sidebar (no second one in a top bar)
}
html_context = {'default_mode': 'light'}   # a first visit (empty storage) starts light, with no console error
html_favicon = '_static/favicon.svg'       # else the browser asks for /favicon.ico, which is not there
