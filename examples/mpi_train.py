"""Data-parallel training over MPI, written as one would run it on a cluster (chapter 18b).

    python examples/mpi_train.py -n 2 lenet --threads 1   # starts itself again under `mpiexec -n 2`
    mpiexec -n 2 python examples/mpi_train.py lenet       # the same by hand; with a host file, across machines

Needs the `dist` extra (pip install -e '.[dist]': mpi4py and MPICH). Subcommands:
  equivalence  every rank trains a small net in float64 (and float32) with the ring all-reduce and with MPI's
               Allreduce; rank 0 also trains it in one process on the full batches and reports the largest weight
               difference and whether the replicas are identical bit for bit.
  allreduce    median seconds of ring_allreduce, naive_allreduce and MPI's Allreduce for several float32 sizes.
  lenet        one LeNet-5 MNIST epoch (SGD 0.05, momentum 0.9, global batch 128) with --threads per rank:
               epoch, compute and all-reduce seconds, test accuracy.
Rank 0 ends its output with one line `RESULT {json}`.
"""
import argparse, json, os, statistics, sys, time
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')    # before NumPy loads: see nbs/00_core, 'Threads'
import numpy as np
from dl_from_scratch import distributed as D
from dl_from_scratch.core import precision, set_num_threads
from dl_from_scratch.layers import Dense, Flatten
from dl_from_scratch.conv import Conv2D, MaxPool2D
from dl_from_scratch.model import Sequential
from dl_from_scratch.optim import SGD
from dl_from_scratch.losses import SparseCategoricalCrossentropy


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-n', '--ranks', type=int, default=None, help='start this script under mpiexec with this many ranks')
    p.add_argument('--threads', type=int, default=1, help='threads per rank (Numba and OpenBLAS)')
    sub = p.add_subparsers(dest='command', required=True)
    sub.add_parser('equivalence')
    a = sub.add_parser('allreduce')
    a.add_argument('--sizes', type=int, nargs='+', default=[1_000, 61_706, 1_000_000, 4_000_000])
    a.add_argument('--repeat', type=int, default=20)
    l = sub.add_parser('lenet')
    l.add_argument('--images', type=int, default=None, help='train on the first N images (default: all 60,000)')
    l.add_argument('--allreduce', default='ring', choices=['ring', 'naive', 'mpi'])
    return p.parse_args(argv)


def small_net(seed, dtype):
    with precision(dtype):
        m = Sequential([Dense(32, activation='tanh', rng=seed), Dense(3, rng=seed + 1)], input_shape=(10,))
        m.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.1, momentum=0.9))
    return m


def equivalence(comm):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10))
    y = (X[:, :3].sum(1) > 0).astype(np.int64) + (X[:, 3] > 0.5)
    out = {'ranks': comm.size}
    for dtype in (np.float64, np.float32):
        for allreduce in ('ring', 'mpi'):
            m = small_net(seed=comm.rank, dtype=dtype)      # each rank starts elsewhere: DataParallel broadcasts rank 0's
            with precision(dtype):
                hist = D.DataParallel(m, comm, allreduce).fit(X.astype(dtype), y, epochs=3, batch_size=64, rng=1,
                                                              verbose=False)
            same = D.replicas_identical(comm, m)
            if comm.rank == 0:
                ref = small_net(seed=0, dtype=dtype)
                with precision(dtype): ref.fit(X.astype(dtype), y, epochs=3, batch_size=64, rng=1, verbose=0)
                diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(m.get_weights(), ref.get_weights()))
                out[f'{np.dtype(dtype).name} {allreduce}'] = dict(max_rel_diff=diff, replicas_identical=same,
                                                                  loss=hist[-1]['loss'])
    return out


def allreduce(comm, sizes, repeat):
    out = {'ranks': comm.size, 'repeat': repeat}
    for n in sizes:
        x = np.ones(n, np.float32)
        for name, fn in (('ring', D.ring_allreduce), ('naive', D.naive_allreduce), ('mpi', lambda c, a: c.allreduce(a))):
            ts = []
            for i in range(repeat + 2):                     # two warm-up calls
                x[:] = 1; comm.barrier()
                t0 = time.perf_counter(); fn(comm, x); ts.append(time.perf_counter() - t0)
            assert x[0] == comm.size, (name, x[0])
            out[f'{name} {n}'] = statistics.median(ts[2:])
    return out


def lenet5(rng=0):
    "Chapter 08's LeNet-5: 6@5x5 'same' -> pool -> 16@5x5 -> pool -> 120 -> 84 -> 10 logits."
    return Sequential([Conv2D(6, 5, padding='same', activation='relu', rng=rng), MaxPool2D(2),
                       Conv2D(16, 5, activation='relu', rng=rng), MaxPool2D(2), Flatten(),
                       Dense(120, activation='relu', rng=rng), Dense(84, activation='relu', rng=rng),
                       Dense(10, rng=rng)], input_shape=(28, 28, 1), name='lenet5')


def lenet(comm, images, allreduce_name, threads):
    from dl_from_scratch.data import load
    (x, y), (xt, yt) = load('mnist', 'train'), load('mnist', 'test')
    x, xt = x[:images].astype(np.float32) / 255, xt.astype(np.float32) / 255
    y = y[:images]
    model = lenet5(rng=0)
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.05, momentum=0.9))
    dp = D.DataParallel(model, comm, allreduce_name)
    dp.train_step(x[:128], y[:128])                         # compiles the kernels, builds and broadcasts the model
    dp.compute_time = dp.comm_time = 0.0; dp.steps = 0
    comm.barrier()
    t0 = time.perf_counter()
    hist = dp.fit(x, y, epochs=1, batch_size=128, rng=0, verbose=False)
    comm.barrier()
    epoch = time.perf_counter() - t0
    same = D.replicas_identical(comm, model)
    loss, acc = model.evaluate(xt, yt) if comm.rank == 0 else (None, None)
    return dict(ranks=comm.size, threads=threads, images=len(x), epoch_s=epoch, compute_s=dp.compute_time,
                allreduce_s=dp.comm_time, steps=dp.steps, train_loss=hist[0]['loss'], test_accuracy=acc,
                replicas_identical=same, allreduce=allreduce_name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.ranks is not None and not D.under_mpiexec():   # the launcher: this script again, on `ranks` MPI processes
        rest = [a for i, a in enumerate(argv) if a not in ('-n', '--ranks') and (i == 0 or argv[i - 1] not in ('-n', '--ranks'))]
        return D.subprocess.call(D.mpiexec_command(args.ranks, [os.path.abspath(__file__), *rest]), env=D.mpi_environment())
    set_num_threads(args.threads)                         # p ranks x t threads should not pass the machine's cores
    comm = D.MPIComm()
    if args.command == 'equivalence': result = equivalence(comm)
    elif args.command == 'allreduce': result = allreduce(comm, args.sizes, args.repeat)
    else: result = lenet(comm, args.images, args.allreduce, args.threads)
    if comm.rank == 0: print('RESULT ' + json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
