"""Download and prepare every dataset of the book (`make data`), into TFDS_DATA_DIR or ~/tensorflow_datasets,
and fetch the images of style transfer into DLFS_IMAGES_DIR (default: see `data.images_dir`).

    python tools/data_prepare.py [NAME ...]      # default: every dataset the book uses, and `images`

Checks the network first, so that an offline machine fails at once with what to do; then installs the package's
`data` extra (TensorFlow, which TFDS's builders need to prepare a dataset) if it is missing, and prepares what is
not prepared yet, in the array_record format that the book reads without TensorFlow.
"""
from __future__ import annotations
import argparse, importlib.util, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def images() -> int:
    "Fetch the images that are missing; 0 on success."
    from dl_from_scratch.data import DatasetDownloadError, fetch_images, images_dir
    try:
        got = fetch_images()
    except DatasetDownloadError as e:
        print(f"make data: {e}", file=sys.stderr); return 1
    print(f"images directory {images_dir()}: " + (f"fetched {', '.join(got)}" if got else 'every image present'), flush=True)
    return 0


def main(argv=None) -> int:
    from dl_from_scratch.data import DATA_FLAGS, DatasetDownloadError, check_downloads, data_dir, is_prepared
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('names', nargs='*', default=list(DATA_FLAGS), help=f"datasets (default: {' '.join(DATA_FLAGS)})")
    names = ap.parse_args(argv).names
    if 'images' in names:
        names = [n for n in names if n != 'images']
        if images(): return 1
        if not names: return 0
    todo = [n for n in names if not is_prepared(n)]
    print(f"data directory {data_dir()}: " + (f"prepared {', '.join(n for n in names if n not in todo)}; " if len(todo) < len(names) else '')
          + (f"to prepare: {', '.join(todo)}" if todo else 'nothing to do'), flush=True)
    if not todo: return 0
    try:
        check_downloads(todo)
    except DatasetDownloadError as e:
        print(f"make data: {e}", file=sys.stderr); return 1
    if importlib.util.find_spec('tensorflow') is None:
        print("installing the package's data extra (TensorFlow, needed to prepare datasets) ...", flush=True)
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', f'{ROOT}[data]'], check=True)
    # A fresh interpreter, so that TFDS finds the TensorFlow just installed.
    return subprocess.run([sys.executable, '-c', 'import sys; from dl_from_scratch.data import prepare, DatasetDownloadError\n'
                           'try: print("prepared:", ", ".join(prepare(sys.argv[1:])) or "nothing")\n'
                           'except DatasetDownloadError as e: sys.exit(f"make data: {e}")', *todo]).returncode


if __name__ == '__main__':
    sys.exit(main())
