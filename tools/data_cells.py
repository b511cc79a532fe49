"""Which notebook cells need a prepared dataset, and the nbdev test flags that say so.

    python tools/data_cells.py --check [NB ...]       # each cell that needs a dataset carries its flag (`#| mnist`), no other does
    python tools/data_cells.py --apply nbs/NN_x.py ...  # write those flags into jupytext twins (idempotent), then sync the pair
    python tools/data_cells.py --flags [FLAG ...]     # value for `nbdev_test --flags`: FLAG ... plus every prepared dataset (and images)
    python tools/data_cells.py --summary [FLAG ...]   # after the run: chapters run, cells skipped for missing data

A cell needs dataset NAME when it calls a data entry point (`load('NAME', ...)`, `data.load(...)`,
`tfds.data_source(...)`, or a function of the notebook that passes its argument on to one), and needs `images` when it
calls `load_image(...)` (without `images_dir=`), or when it reads a name
that such a cell bound or changed (`model.fit(x_train, ...)` changes `model`), transitively. Loads inside
`with tfds.testing.mock_data(...)` and inside a `test_fail(lambda: ...)` need no prepared data.

Each dataset flag is listed in settings.ini's `tst_flags`, so nbdev_test skips a flagged cell unless `--flags` names
every flag the cell carries: a cell with `#| slow` and `#| mnist` runs only under `--flags "slow mnist"`.
With REQUIRE_DATA=1 (CI, where the prepared data lives in ../shared), --flags and --summary fail when a cell would
be skipped for a dataset that is not prepared.
"""
from __future__ import annotations
import argparse, ast, json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nbdev.process import extract_directives           # nbdev's own reading of `#|` lines
from fastcore.basics import AttrDict

ENTRY_NAMES = {'load'}                                  # load(...), as `from dl_from_scratch.data import load`
ENTRY_ATTRS = {('data', 'load'), ('tfds', 'data_source'), ('tfds', 'load'), ('tfds', 'builder')}
NO_DATA_WITH = {'mock_data', 'raises'}                  # `with` blocks whose loads are fabricated or expected to fail
NO_DATA_CALLS = {'test_fail'}                           # lambdas given to these are expected to fail
# Entry points that always need the same data, whatever their arguments, unless given the keyword that points
# them at a folder of the caller's (a test's temporary folder): load_image('starry_night') needs the images.
FIXED_ENTRIES = {'load_image': ('images', 'images_dir'), 'load_omniglot_alphabets': ('omniglot', 'data_dir')}


def datasets() -> tuple[str, ...]:
    "The data flags: every dataset `make data` prepares, and `images` (the pictures it fetches)."
    from dl_from_scratch.data import DATA_FLAGS
    return DATA_FLAGS


# ---------------------------------------------------------------- reading notebooks
def read_cells(path: Path) -> list[str]:
    "Sources of the code cells of a notebook (`.ipynb`) or of its jupytext twin (`.py`), in order."
    if path.suffix == '.ipynb':
        nb = json.loads(path.read_text(encoding='utf-8'))
        return [''.join(c['source']) if isinstance(c['source'], list) else c['source']
                for c in nb['cells'] if c['cell_type'] == 'code']
    import jupytext
    return [c.source for c in jupytext.read(path).cells if c.cell_type == 'code']


def directives(src: str) -> dict:
    return extract_directives(AttrDict(source=src), remove=False)


def _parseable(src: str) -> str:
    "Cell source with IPython magics and shell lines blanked, so that `ast` can read it."
    return '\n'.join('' if re.match(r'\s*[%!]', l) else l for l in src.splitlines())


# ---------------------------------------------------------------- the analysis
def _entry_dataset_arg(call: ast.Call):
    "The dataset-name argument of a call to a data entry point, else None."
    f = call.func
    hit = (isinstance(f, ast.Name) and f.id in ENTRY_NAMES) or (
        isinstance(f, ast.Attribute) and (
            (isinstance(f.value, ast.Name) and (f.value.id, f.attr) in ENTRY_ATTRS) or
            (isinstance(f.value, ast.Attribute) and (f.value.attr, f.attr) in ENTRY_ATTRS)))
    if not hit: return None
    if call.args: return call.args[0]
    return next((k.value for k in call.keywords if k.arg == 'name'), None)


def _fixed_entry(call: ast.Call) -> str | None:
    "The data flag a call to a fixed entry point (`load_image(...)`, `data.load_image(...)`) needs, else None."
    f = call.func
    name = f.id if isinstance(f, ast.Name) else f.attr if (
        isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == 'data') else None
    if name not in FIXED_ENTRIES: return None
    flag, folder = FIXED_ENTRIES[name]
    return None if any(k.arg == folder for k in call.keywords) else flag


def _call_name(node) -> str | None:
    f = node.func if isinstance(node, ast.Call) else node
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _calls_outside_exemptions(tree):
    "Every Call node in `tree`, except those under a mock_data/raises `with` or in a lambda given to test_fail."
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                isinstance(i.context_expr, ast.Call) and _call_name(i.context_expr) in NO_DATA_WITH for i in node.items):
            continue
        if isinstance(node, ast.Call):
            yield node
            if _call_name(node) in NO_DATA_CALLS:
                stack += [a for a in node.args if not isinstance(a, ast.Lambda)] + [k.value for k in node.keywords]
                stack.append(node.func)
                continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _with_names(node) -> set[str]:
    "Names a `with` statement binds with `as`."
    return set().union(*(_targets(i.optional_vars) for i in node.items if i.optional_vars))


def _params(args: ast.arguments) -> set[str]:
    return {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg] if a}


def _reads(node, bound: frozenset = frozenset()) -> set[str]:
    "Names `node` reads from outside: loop, comprehension, lambda and function variables are its own."
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) and node.id not in bound else set()
    if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef)):
        out = set().union(*(_reads(d, bound) for d in node.args.defaults + [d for d in node.args.kw_defaults if d]))
        if isinstance(node, ast.Lambda): return out | _reads(node.body, bound | _params(node.args))
        out |= set().union(*(_reads(d, bound) for d in node.decorator_list))
        local = bound | _params(node.args) | {n.id for b in node.body for n in ast.walk(b)
                                               if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        return out | set().union(*(_reads(b, local) for b in node.body))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        out, b = set(), bound
        for g in node.generators:
            out |= _reads(g.iter, b); b = b | _targets(g.target)
            for c in g.ifs: out |= _reads(c, b)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        return out | set().union(*(_reads(e, b) for e in parts))
    if isinstance(node, (ast.For, ast.AsyncFor)):
        b = bound | _targets(node.target)
        return _reads(node.iter, bound) | set().union(*(_reads(s, b) for s in node.body + node.orelse))
    if isinstance(node, (ast.With, ast.AsyncWith)):
        out = set().union(*(_reads(i.context_expr, bound) for i in node.items))
        return out | set().union(*(_reads(s, bound | _with_names(node)) for s in node.body))
    return set().union(*(_reads(c, bound) for c in ast.iter_child_nodes(node)))


def _stores(stmt) -> set[str]:
    "Names a statement binds (assignment and loop targets, defs, imports, with ... as)."
    out = set()
    for n in ast.walk(stmt):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store): out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is stmt: out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split('.')[0] for a in n.names}
    return out


def _mutated(stmt) -> set[str]:
    "Names whose object a statement may change: receivers of method calls, targets of item/attribute stores."
    out = set()
    for n in ast.walk(stmt):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
            out.add(n.func.value.id)
        elif isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, ast.Store):
            base = n.value
            while isinstance(base, (ast.Subscript, ast.Attribute)): base = base.value
            if isinstance(base, ast.Name): out.add(base.id)
    return out


class Notebook:
    """Which datasets each code cell of one notebook needs.

    `needs[i]` is the set of dataset names code cell i needs, `flags[i]` the dataset flags it carries,
    `problems` the lines that --check reports."""
    def __init__(self, path: Path, known: tuple[str, ...] | None = None):
        self.path, self.known = Path(path), set(known or datasets())
        self.sources = read_cells(self.path)
        self.directives = [directives(s) for s in self.sources]
        self.flags = [set(d) & self.known for d in self.directives]
        self.problems: list[str] = []
        self.taint: dict[str, set] = {}       # name -> datasets its value depends on
        self.modules: set[str] = set()        # names bound by imports: calling their methods changes nothing of ours
        self.loaders: dict[str, int] = {}     # function -> index of the parameter it passes to an entry point
        self.strings: dict[str, str] = {}     # name -> the string literal last bound to it
        self.bound: set[str] = set()          # names bound so far
        self.needs = [self._cell(i, s) for i, s in enumerate(self.sources)]
        for i, (need, have) in enumerate(zip(self.needs, self.flags)):
            where = f"{self.path.name} code cell {i + 1} ({self._head(i)})"
            if need and {'export', 'exports', 'exporti'} & self.directives[i].keys():
                self.problems.append(f"{where}: an exported cell needs {', '.join(sorted(need))}")
            if need - have: self.problems.append(f"{where}: missing " + ' '.join(f'#| {d}' for d in sorted(need - have)))
            if have - need: self.problems.append(f"{where}: needs no " + ', '.join(sorted(have - need)) + '; drop ' +
                                                 ' '.join(f'#| {d}' for d in sorted(have - need)))

    def _head(self, i):
        code = [l for l in self.sources[i].splitlines() if l.strip() and not l.lstrip().startswith('#')]
        return (code[0].strip()[:60] if code else '').replace('\n', ' ')

    def _resolve(self, arg, fn_params=None, loop_values=None) -> tuple[set, int | None]:
        "Datasets named by an entry point's argument, or the index of the enclosing function's parameter it is."
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str): return {arg.value} & self.known, None
        if isinstance(arg, ast.Name):
            if fn_params and arg.id in fn_params: return set(), fn_params.index(arg.id)
            if loop_values and arg.id in loop_values: return set(loop_values[arg.id]) & self.known, None
            if arg.id in self.strings: return {self.strings[arg.id]} & self.known, None
        return None, None

    def _direct(self, tree, cell_no, fn_params=None, report=True) -> tuple[set, set]:
        "Datasets that the calls in `tree` load, and the parameters of the enclosing function passed to a loader."
        loops = {}
        for n in ast.walk(tree):           # `for name in ('mnist', 'cifar10'): load(name)`
            if isinstance(n, (ast.For, ast.comprehension)) and isinstance(n.target, ast.Name) and \
                    isinstance(n.iter, (ast.List, ast.Tuple)) and \
                    all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.iter.elts):
                loops[n.target.id] = [e.value for e in n.iter.elts]
        found, passed = set(), set()
        for call in _calls_outside_exemptions(tree):
            fixed = _fixed_entry(call)
            if fixed: found.add(fixed); continue
            arg = _entry_dataset_arg(call)
            if arg is None and _call_name(call) in self.loaders and isinstance(call.func, ast.Name):
                k = self.loaders[call.func.id]
                arg = call.args[k] if k < len(call.args) else None
            if arg is None: continue
            names, param = self._resolve(arg, fn_params, loops)
            if param is not None: passed.add(param)
            elif names is None:
                if report: self.problems.append(
                    f"{self.path.name} code cell {cell_no + 1} ({self._head(cell_no)}): cannot tell which dataset "
                    f"`{ast.unparse(call)[:60]}` loads; name it with a string literal")
            else: found |= names
        return found, passed

    def _cell(self, i, src) -> set:
        d = self.directives[i]
        if d.get('eval:', [''])[0].lower() == 'false': return set()
        try: tree = ast.parse(_parseable(src))
        except SyntaxError as e:
            self.problems.append(f"{self.path.name} code cell {i + 1}: does not parse ({e.msg}, line {e.lineno})"); return set()
        need, library = set(), bool({'export', 'exports', 'exporti'} & d.keys())
        binds = []                            # (names, binds unconditionally, taint of its own besides the cell's)
        fresh = set()                         # names this cell has bound unconditionally so far: reads see these
        prior = lambda names: set().union(*(self.taint.get(n, set()) for n in names - fresh))
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                params = [a.arg for a in stmt.args.posonlyargs + stmt.args.args] if not isinstance(stmt, ast.ClassDef) else None
                # in the package's own code a dataset named by a variable is the caller's to name
                found, passed = self._direct(stmt, i, params, report=not library)
                if passed and params is not None: self.loaders[stmt.name] = min(passed)
                binds.append(({stmt.name}, True, found | prior(_reads(stmt)))); fresh.add(stmt.name)
                continue
            found, _ = self._direct(stmt, i)
            need |= found | prior(_reads(stmt))
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):    # importing again binds the same module: no new taint
                binds.append((_stores(stmt) - self.bound, True, set())); self.modules |= _stores(stmt)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):   # `as` names are bound before the body runs
                binds += [(_stores(stmt) - _with_names(stmt), False, set()), (_with_names(stmt), True, set())]
            else:
                binds.append((_stores(stmt), isinstance(stmt, (ast.Assign, ast.AnnAssign)), set()))
            if binds[-1][1]: fresh |= binds[-1][0]
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                self.strings.update({t.id: stmt.value.value for t in stmt.targets if isinstance(t, ast.Name)})
        # A skipped cell binds nothing: every name it binds or changes depends on all the cell needs.
        for names, plain, own in binds:
            for n in names:
                self.taint[n] = need | own if plain else self.taint.get(n, set()) | need | own
        if need:
            for n in set().union(*(_mutated(s) for s in tree.body)) - self.modules:
                self.taint[n] = self.taint.get(n, set()) | need
        self.bound |= set().union(*(b[0] for b in binds))
        return need


# ---------------------------------------------------------------- presence of the data, nbdev's view of the run
def prepared() -> set[str]:
    "The data flags whose data is here (datasets prepared, images present)."
    from dl_from_scratch.data import is_available
    return {d for d in datasets() if is_available(d)}


def notebooks(paths=None) -> list[Path]:
    "The notebooks nbdev_test runs (nbdev's glob: nbs/*.ipynb whose names do not start with _ or .)."
    if paths: return [Path(p) for p in paths]
    return sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not re.match(r'^[_.]', p.name))


def test_flags() -> set[str]:
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())


def skipped_for_data(nbs: list[Notebook], forced: set[str], have: set[str]) -> list[tuple[str, int, set]]:
    "(notebook, cell, missing datasets) for each cell that would run but for a dataset that is not prepared."
    skip = test_flags() - forced
    out = []
    for nb in nbs:
        for i, d in enumerate(nb.directives):
            missing = nb.flags[i] - have
            if missing and not (set(d) & (skip - nb.known)):      # not skipped anyway (slow, gpu, ...)
                out.append((nb.path.name, i + 1, missing))
    return out


def require_data() -> bool:
    return os.environ.get('REQUIRE_DATA', '') not in ('', '0')


def _fail_if_required(skipped, have):
    if not (require_data() and skipped): return
    missing = sorted(set().union(*(m for *_, m in skipped)))
    from dl_from_scratch.data import data_dir
    sys.exit(f"REQUIRE_DATA is set, but {len(skipped)} cells need data that is not prepared in {data_dir()}: "
             f"{', '.join(missing)}. Run `make data`, or point TFDS_DATA_DIR at a folder that holds them.")


# ---------------------------------------------------------------- the commands
def check(paths) -> int:
    unlisted = sorted(set(datasets()) - test_flags())
    problems = [f"settings.ini: tst_flags lacks {', '.join(unlisted)}, so nbdev_test would run those cells without "
                f"the data"] if unlisted else []
    problems += [p for path in notebooks(paths) for p in Notebook(path).problems]
    print('\n'.join(problems) if problems else f"data flags: every cell of {len(notebooks(paths))} notebooks is flagged right")
    return 1 if problems else 0


def apply(paths) -> int:
    "Rewrite the dataset flags of each jupytext twin so that --check passes, then sync its notebook."
    changed = []
    for p in map(Path, paths):
        if p.suffix != '.py': sys.exit(f"--apply edits jupytext twins (nbs/NN_x.py), got {p}")
        nb = Notebook(p)
        lines = p.read_text(encoding='utf-8').splitlines(keepends=True)
        starts = [j for j, l in enumerate(lines) if re.match(r'# %%(?!\s*\[(markdown|md|raw)\])', l)]
        if len(starts) != len(nb.sources):
            sys.exit(f"{p}: found {len(starts)} code-cell markers but jupytext reads {len(nb.sources)} code cells")
        for j, need, have in reversed(list(zip(starts, nb.needs, nb.flags))):
            if need == have: continue
            k = j + 1
            while k < len(lines) and re.match(r'\s*#\s*\|', lines[k]): k += 1   # the cell's directive lines
            head = [l for l in lines[j + 1:k] if not (directives(l).keys() & (have - need))]
            lines[j + 1:k] = head + [f'#| {d}\n' for d in sorted(need - have)]
        text = ''.join(lines)
        if text != p.read_text(encoding='utf-8'):
            p.write_text(text, encoding='utf-8'); changed.append(p)
            if Notebook(p).problems: sys.exit(f"{p}: still has problems after --apply: {Notebook(p).problems}")
    for p in changed:                      # the notebook follows its twin (outputs kept)
        if p.with_suffix('.ipynb').exists():
            subprocess.run([str(Path(sys.executable).parent / 'jupytext'), '--sync', str(p)], check=True)
    print(f"data flags written to {len(changed)} of {len(paths)} twins" + (': ' + ' '.join(map(str, changed)) if changed else ''))
    return 0


def flags(extra) -> int:
    have = prepared()
    _fail_if_required(skipped_for_data([Notebook(p) for p in notebooks()], set(extra) | have, have), have)
    print(' '.join(list(extra) + sorted(have)))
    return 0


def _n(k, word): return f"{k} {word}{'' if k == 1 else 's'}"


def summary(extra) -> int:
    have = prepared()
    nbs = [Notebook(p) for p in notebooks()]
    skipped = skipped_for_data(nbs, set(extra) | have, have)
    for name in sorted({nb for nb, *_ in skipped}):
        cells = [(i, m) for nb, i, m in skipped if nb == name]
        print(f"  {name}: {_n(len(cells), 'cell')} skipped ({'code cells' if len(cells) > 1 else 'code cell'} {', '.join(str(i) for i, _ in cells)}), "
              f"no {', '.join(sorted(set().union(*(m for _, m in cells))))}")
    missing = sorted(set().union(*(m for *_, m in skipped)))
    print(f"{_n(len(nbs), 'notebook')} ran; " + (f"{_n(len(skipped), 'cell')} skipped for missing data: {', '.join(missing)} "
                                                 f"(run make data)" if skipped else "no cell skipped for missing data"))
    _fail_if_required(skipped, have)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument('--check', nargs='*', metavar='NB', help='notebooks or twins to check (default: nbs/*.ipynb)')
    g.add_argument('--apply', nargs='+', metavar='TWIN', help='jupytext twins (nbs/NN_x.py) to flag')
    g.add_argument('--flags', nargs='*', metavar='FLAG', help='other flags to force (e.g. slow)')
    g.add_argument('--summary', nargs='*', metavar='FLAG', help='the flags forced besides the data flags')
    a = ap.parse_args(argv)
    if a.check is not None: return check(a.check)
    if a.apply is not None: return apply(a.apply)
    if a.flags is not None: return flags(a.flags)
    return summary(a.summary)


if __name__ == '__main__':
    sys.exit(main())
