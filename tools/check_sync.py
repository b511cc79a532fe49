"""Fail when the generated files are stale.

1. Every notebook in nbs/ has a percent-format jupytext twin, and the twin says what the notebook says.
2. Running nbdev_export changes nothing in dl_from_scratch/ (the package is generated, never hand-edited).

Run by `make check` (and so by `make test` and CI). Exit status 1 names every stale file.
"""
from __future__ import annotations
import hashlib, subprocess, sys
from pathlib import Path
import jupytext
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB = ROOT / 'nbs', ROOT / 'dl_from_scratch'


def twin_text(nb_path: Path) -> str:
    "The percent-format text jupytext --sync would write for this notebook, under the repository's jupytext.toml."
    cfg = load_jupytext_configuration_file(find_jupytext_configuration_file(str(NBS)))
    nb = jupytext.read(nb_path)
    nb.metadata['jupytext'] = {'notebook_metadata_filter': cfg.notebook_metadata_filter,
                               'cell_metadata_filter': cfg.cell_metadata_filter}
    return jupytext.writes(nb, fmt='py:percent')


def check_twins() -> list[str]:
    problems = []
    for nb in sorted(NBS.glob('*.ipynb')):
        twin = nb.with_suffix('.py')
        if not twin.exists():
            problems.append(f"{nb.relative_to(ROOT)} has no jupytext twin {twin.name} (run `make sync`)")
        elif twin_text(nb).strip() != twin.read_text(encoding='utf-8').strip():
            problems.append(f"{twin.relative_to(ROOT)} disagrees with {nb.name} (edit one, then `make sync`)")
    for py in sorted(NBS.glob('*.py')):
        if not py.with_suffix('.ipynb').exists():
            problems.append(f"{py.relative_to(ROOT)} has no notebook (run `jupytext --sync {py.relative_to(ROOT)}`)")
    return problems


def snapshot() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(LIB.rglob('*.py'))}


def check_export() -> list[str]:
    before = snapshot()
    exe = Path(sys.executable).with_name('nbdev_export')
    subprocess.run([str(exe)], cwd=ROOT, check=True)
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [f"{k} changed when re-exported from the notebooks: the package was stale or hand-edited "
            f"(edit the notebook, run `make export`, commit both)" for k in changed]


if __name__ == '__main__':
    problems = check_twins() + check_export()
    for p in problems: print('STALE:', p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check: {len(list(NBS.glob('*.ipynb')))} notebooks agree with their twins; the exported package is up to date")
