"""Open the built book site (_book/) in headless Chromium and check it as a reader's browser sees it.

    python tools/book_check.py [--site _book] [--screenshot FILE] [--chromium PATH]

The site is served on 127.0.0.1 and driven over the Chrome DevTools Protocol (a websocket; no browser
download, no driver). Checks, each printed as PASS or FAIL:
  pages      every page loads with no console error, no failed request, and no request leaving the machine;
  math       MathJax typesets the math of every page that has some, with no TeX error and no TeX left
             unparsed in the prose, and a chapter has math;
  search     the search page finds "im2col";
  links      every internal link (page and #anchor) resolves;
  outputs    no stored warning (stderr) and no local path in any cell output;
  code fold  "Hide code" hides the code cells' inputs and nothing else.
Exit status 1 when a check fails. `make book-check` runs it (and .ci/run calls that).
"""
from __future__ import annotations
import argparse, base64, functools, http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.parse, urllib.request
from pathlib import Path
import websocket
from execute import LOCAL_PATH                # one definition of a local path, shared with `make execute`

ROOT = Path(__file__).resolve().parents[1]
MATH_CHAPTER = '07_convolutions.html'      # a chapter with display math; also the screenshot's page
SEARCH_TERM = 'im2col'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    "A quiet static server of the site on 127.0.0.1, in a thread."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f'http://127.0.0.1:{httpd.server_address[1]}/'


class Browser:
    "Headless Chromium and one page, spoken to with the Chrome DevTools Protocol."

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix='book-check-')
        port = free_port()
        # No background services: this machine's network is closed, and the check counts every request.
        self.proc = subprocess.Popen(
            [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--disable-default-apps', '--disable-extensions', '--disable-dev-shm-usage', '--hide-scrollbars',
             '--window-size=1400,1000', f'--remote-debugging-port={port}', f'--user-data-dir={self.profile}',
             'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=2))
                page = next(t for t in targets if t['type'] == 'page')
                break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close()
                    raise RuntimeError(f"{exe} did not open its DevTools port {port}")
                time.sleep(0.2)
        self.ws = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=60, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ('Page', 'Runtime', 'Network', 'Log'):
            self.call(f'{domain}.enable')
        self.call('Emulation.setDeviceMetricsOverride', width=1400, height=1000, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({'id': self.next_id, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.next_id:
                if 'error' in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get('result', {})
            self.events.append(msg)

    def pump(self, seconds: float):
        "Collect events for a while."
        end = time.time() + seconds
        while (left := end - time.time()) > 0:
            self.ws.settimeout(left)
            try: self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException: break
        self.ws.settimeout(60)

    def eval(self, js: str, timeout: float = 30):
        r = self.call('Runtime.evaluate', expression=js, awaitPromise=True, returnByValue=True, timeout=timeout * 1000)
        if 'exceptionDetails' in r: raise RuntimeError(f"page script failed: {r['exceptionDetails'].get('text')}: {js[:80]}")
        return r['result'].get('value')

    def open(self, url: str) -> list[dict]:
        "Load a page, let it settle (MathJax typesets, late requests go out), and return its events."
        self.events = []
        self.call('Page.navigate', url=url)
        end = time.time() + 30
        while not any(e.get('method') == 'Page.loadEventFired' for e in self.events) and time.time() < end:
            self.pump(0.2)
        self.eval('window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise.then(() => 1) : 0')
        self.pump(0.3)
        return self.events

    def close(self):
        try: self.ws.close()
        except Exception: pass
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def problems_of(events: list[dict], base: str) -> tuple[list[str], int]:
    "Console errors, exceptions, failed or off-machine requests among a page's events; and the request count."
    out, requests = [], 0
    for e in events:
        m, p = e.get('method'), e.get('params', {})
        if m == 'Network.requestWillBeSent':
            requests += 1
            url = p['request']['url']
            if urllib.parse.urlsplit(url).scheme not in ('data', 'blob', 'about') and not url.startswith(base):
                out.append(f"request leaves the machine: {url}")
        elif m == 'Network.responseReceived' and p['response']['status'] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == 'Network.loadingFailed' and not p.get('canceled'):
            out.append(f"request failed ({p.get('errorText')})")
        elif m == 'Runtime.consoleAPICalled' and p['type'] in ('error', 'assert'):
            out.append('console error: ' + ' '.join(str(a.get('value', a.get('description', ''))) for a in p['args'])[:200])
        elif m == 'Runtime.exceptionThrown':
            d = p['exceptionDetails']
            out.append(f"uncaught exception: {d.get('exception', {}).get('description', d.get('text'))}"[:200])
        elif m == 'Log.entryAdded' and p['entry']['level'] == 'error':
            out.append(f"console error: {p['entry']['text']} {p['entry'].get('url', '')}"[:200])
    return out, requests


PAGE_FACTS = r"""(() => {
  const outputs = [...document.querySelectorAll('.cell_output')];
  return {
    ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.name),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    math: document.querySelectorAll('mjx-container').length,
    math_source: document.querySelectorAll('.math').length,
    math_errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent).slice(0, 3),
    raw_tex: (() => {          // TeX left in the prose: math the Markdown parser did not recognise
      const a = document.querySelector('article'); if (!a) return [];
      const c = a.cloneNode(true);
      c.querySelectorAll('.math, mjx-container, pre, code, .highlight, script, .cell_output').forEach(e => e.remove());
      return [...c.textContent.matchAll(/.{0,30}(\\[a-zA-Z]{2,}|\$\$).{0,30}/g)].map(m => m[0].replace(/\s+/g, ' ')).slice(0, 3);
    })(),
    stderr: [...document.querySelectorAll('.output.stderr')].map(e => e.textContent.slice(0, 160)),
    output_text: outputs.map(e => e.textContent).join('\n'),
    captions: [...document.querySelectorAll('nav.bd-links p.caption')].map(e => e.textContent.trim()),
    prev_next: [...document.querySelectorAll('.prev-next-area a')].map(a => a.getAttribute('href')),
  };
})()"""

FOLD = """(async () => {
  const btn = document.querySelector('.code-fold-toggle');
  if (!btn) return {button: false};
  const shown = sel => [...document.querySelectorAll(sel)].filter(e => e.offsetParent !== null).length;
  const before = {inputs: shown('.cell .cell_input'), prose: shown('article p'), outputs: shown('.cell_output')};
  btn.click();
  await new Promise(r => setTimeout(r, 100));
  const after = {inputs: shown('.cell .cell_input'), prose: shown('article p'), outputs: shown('.cell_output'),
                 label: btn.textContent};
  btn.click();
  return {button: true, before, after};
})()"""

SEARCH = """(async () => {
  for (let i = 0; i < 100; i++) {
    const hits = [...document.querySelectorAll('#search-results ul.search li a:first-of-type')];
    if (hits.length) return hits.map(a => a.textContent.trim() + ' <' + a.getAttribute('href') + '>');
    await new Promise(r => setTimeout(r, 200));
  }
  return [];
})()"""


def check(site: Path, exe: str, screenshot: Path | None) -> bool:
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if '_static' not in p.parts)
    if 'index.html' not in pages or MATH_CHAPTER not in pages:
        print(f"FAIL site: {site} has no index.html or {MATH_CHAPTER} (run make book)"); return False
    httpd, base = serve(site)
    browser = Browser(exe)
    results, facts = [], {}
    try:
        load_problems, n_requests = {}, 0
        for page in pages:
            probs, n = problems_of(browser.open(base + page), base)
            n_requests += n
            facts[page] = browser.eval(PAGE_FACTS)
            if probs: load_problems[page] = probs
        results.append(('pages', not load_problems,
                        f"{len(pages)} pages loaded, {n_requests} requests; " + (
                            "all to 127.0.0.1, no console error" if not load_problems else f"problems on {len(load_problems)} pages"),
                        [f"{p}: {x}" for p, xs in load_problems.items() for x in xs]))

        typeset = {p: f['math'] for p, f in facts.items() if f['math']}
        untypeset = [f"{p}: {f['math_source']} math elements, none typeset" for p, f in facts.items()
                     if f['math_source'] and not f['math']]
        tex_errors = [f"{p}: TeX error {e!r}" for p, f in facts.items() for e in f['math_errors']]
        tex_errors += [f"{p}: TeX outside math: {t!r}" for p, f in facts.items() for t in f['raw_tex']]
        results.append(('math', facts[MATH_CHAPTER]['math'] > 0 and not untypeset and not tex_errors,
                        f"MathJax typeset {sum(typeset.values())} formulas on {len(typeset)} pages "
                        f"({facts[MATH_CHAPTER]['math']} on {MATH_CHAPTER}), from a local copy; "
                        + ("no TeX error, no TeX left in prose" if not (untypeset or tex_errors) else "with errors"),
                        untypeset + tex_errors + ([] if facts[MATH_CHAPTER]['math'] else [f"{MATH_CHAPTER}: no math typeset"])))

        search_probs, _ = problems_of(browser.open(f'{base}search.html?q={SEARCH_TERM}'), base)
        hits = browser.eval(SEARCH)
        results.append(('search', bool(hits) and not search_probs,
                        f"search for {SEARCH_TERM!r} found {len(hits)} pages: " + ', '.join(h.split(' <')[0] for h in hits[:5])
                        + (' ...' if len(hits) > 5 else ''),
                        search_probs + ([] if hits else [f"no result for {SEARCH_TERM!r}"])))

        broken, n_links, n_external = [], 0, 0
        ids = {p: set(f['ids']) for p, f in facts.items()}
        for page, f in facts.items():
            for href in f['links']:
                if not href.startswith(base):
                    n_external += urllib.parse.urlsplit(href).scheme in ('http', 'https')
                    continue
                n_links += 1
                u = urllib.parse.urlsplit(href[len(base):])
                target = urllib.parse.unquote(u.path) or 'index.html'
                if target.endswith('/'): target += 'index.html'
                if not (site / target).is_file():
                    broken.append(f"{page}: link to missing {target}")
                elif u.fragment and target.endswith('.html') and target in ids and u.fragment not in ids[target]:
                    broken.append(f"{page}: link to missing anchor {target}#{u.fragment}")
        results.append(('links', not broken, f"{n_links} internal links (pages and anchors), "
                        + ("all resolve; " if not broken else f"{len(broken)} broken; ")
                        + f"{n_external} external links are not followed", sorted(set(broken))))

        dirty = [f"{p}: stored warning: {s.strip()[:150]!r}" for p, f in facts.items() for s in f['stderr']]
        dirty += [f"{p}: local path in an output: ...{f['output_text'][max(0, m.start() - 60):m.end() + 40]!r}..."
                  for p, f in facts.items() for m in [LOCAL_PATH.search(f['output_text'])] if m]
        results.append(('outputs', not dirty, "no stored warning and no local path in any cell output", dirty))

        browser.open(base + MATH_CHAPTER)
        fold = browser.eval(FOLD)
        ok = (fold['button'] and fold['before']['inputs'] > 0 and fold['after']['inputs'] == 0
              and fold['after']['prose'] == fold['before']['prose'] > 0
              and fold['after']['outputs'] == fold['before']['outputs'])
        results.append(('code fold', ok,
                        f"on {MATH_CHAPTER}, 'Hide code' hid {fold['before']['inputs'] if fold['button'] else 0} code inputs "
                        f"and kept {fold['before']['prose'] if fold['button'] else 0} paragraphs and "
                        f"{fold['before']['outputs'] if fold['button'] else 0} outputs", [] if ok else [f"fold: {fold}"]))

        f = facts[MATH_CHAPTER]
        results.append(('navigation', len(f['captions']) >= 2 and len(f['prev_next']) == 2,
                        f"sidebar parts: {' | '.join(f['captions'])}; previous/next on {MATH_CHAPTER}: "
                        f"{' / '.join(f['prev_next'])}", [] if f['captions'] and f['prev_next'] else ['no sidebar parts or prev/next']))

        if screenshot:
            browser.open(base + MATH_CHAPTER)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(browser.call('Page.captureScreenshot', format='png')['data']))
            # and the first figure of the chapter with the code cell that drew it
            y = browser.eval("(() => { const c = document.querySelector('.cell_output img')?.closest('.cell');"
                             " return c ? c.getBoundingClientRect().top + window.scrollY - 20 : -1; })()")
            if y >= 0:
                clip = {'x': 0, 'y': y, 'width': 1400, 'height': 1000, 'scale': 1}
                png = browser.call('Page.captureScreenshot', format='png', clip=clip, captureBeyondViewport=True)['data']
                figure_shot = screenshot.with_name(screenshot.stem + '-figure.png')
                figure_shot.write_bytes(base64.b64decode(png))
    finally:
        browser.close()
        httpd.shutdown()

    print(f"book check: {site} in headless Chromium ({exe})")
    for name, ok, summary, details in results:
        print(f"  {'PASS' if ok else 'FAIL'} {name:<10} {summary}")
        for d in details[:20]: print(f"         - {d}")
        if len(details) > 20: print(f"         ... and {len(details) - 20} more")
    if screenshot: print(f"  screenshots of {MATH_CHAPTER}: {screenshot} (top), {screenshot.stem}-figure.png (first figure)")
    failed = [n for n, ok, *_ in results if not ok]
    if failed: print(f"book check failed: {', '.join(failed)}")
    print(f"book-check: {len(results) - len(failed)} passed, {len(failed)} failed")
    return not failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--site', type=Path, default=ROOT / '_book')
    ap.add_argument('--screenshot', type=Path, help=f'write a PNG of {MATH_CHAPTER} as rendered')
    ap.add_argument('--chromium', default=os.environ.get('CHROMIUM'))
    args = ap.parse_args(argv)
    exe = args.chromium or next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
    if not exe: sys.exit("book_check: no Chromium on the PATH (Debian: apt-get install chromium; `make book-check` does it)")
    sys.exit(0 if check(args.site.resolve(), exe, args.screenshot) else 1)


if __name__ == '__main__':
    main()
