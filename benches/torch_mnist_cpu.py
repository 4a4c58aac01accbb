#!/usr/bin/env python3
"""PyTorch CPU twin of Kiln's README command `cargo run --release --example mnist` (MLP).

Same run as examples/mnist.rs with its defaults (examples/common/{train,model}.rs):
  * data: the vendored data/mnist IDX files (gzip), pixels as (x/255 - 0.1307) / 0.3081,
    labels as class ids; 60 000 training / 10 000 test images
  * model: Linear(784, 512) - ReLU - Dropout(0.2) - Linear(512, 256) - ReLU - Dropout(0.2) -
    Linear(256, 10), PyTorch's default init (Kiln's Linear uses the same U(-1/sqrt(in), 1/sqrt(in)))
  * 8 epochs, batch 128, shuffled every epoch, last partial batch kept (469 steps per epoch)
  * Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay), the learning rate cosine-annealed
    to 0 over all 3 752 steps (CosineAnnealingLR stepped once per batch)
  * mean cross-entropy; the running loss and correct count summed as tensors and read every
    50 steps, as Kiln's loop does; after each epoch the whole test set in batches of 1000 under
    no_grad in eval mode
  * the wall time printed ("done in") spans model construction to the last evaluation, as the
    example's does (data loading before it excluded in both)
  * torch.set_num_threads(2) (the machine's core count by default; --threads overrides)

Usage: python3 benches/torch_mnist_cpu.py [--epochs 8] [--threads 2] [--seed 0]
                                          [--data data/mnist] [--train-limit N]

Installing PyTorch here: only PyPI is reachable, and PyPI's Linux x86_64 `torch` wheel is the
CUDA build. `pip install --no-deps torch` (plus its pure-Python deps) is not enough: importing it
fails, because libtorch_cpu.so itself links libcudart.so.13 and libcupti.so.13 and torch's
__init__ preloads cuBLAS/cuDNN. What worked is the plain `pip install torch` (torch 2.15.0+cu132
with its nvidia-* and triton wheels, ~4.5 GB installed); it runs on the CPU without a GPU.
"""

import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, split, limit=None):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (images.reshape(len(images), 784).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def mlp():
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 10),
    )


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            yb = y[i:i + batch]
            loss_sum += F.cross_entropy(logits, yb) * len(yb)
            correct += (logits.argmax(-1) == yb).sum()
    model.train()
    return loss_sum.item() / len(x), correct.item() / len(x)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="PyTorch CPU twin of Kiln's mnist example (MLP)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=os.path.join(here, "..", "data", "mnist"))
    p.add_argument("--train-limit", type=int, default=None)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    x_train, y_train = load(args.data, "train", args.train_limit)
    x_test, y_test = load(args.data, "test")
    n = len(x_train)
    steps_per_epoch = (n + args.batch_size - 1) // args.batch_size
    print(f"model: mlp, {n} training / {len(x_test)} test images, {args.epochs} epochs, "
          f"batch {args.batch_size}, peak lr {args.lr}")

    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * args.epochs, eta_min=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(-1) == yb).sum()
            if (i + 1) % 50 == 0:
                loss_sum.item(), correct.item()
        train_loss, train_acc = loss_sum.item() / n, correct.item() / n
        train_secs = time.perf_counter() - t0
        test_loss, test_acc = evaluate(model, x_test, y_test)
        print(f"epoch {epoch:>2}: train loss {train_loss:.4f} acc {100 * train_acc:6.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}% | {train_secs:.1f} s, "
              f"{n / train_secs:.0f} img/s", flush=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"done in {wall:.1f} s: test accuracy {100 * test_acc:.2f}%")
    # CPU time of all threads: on a loaded machine a steadier measure of the work than wall time
    # (but it also counts the time OpenMP's threads spin while waiting for work).
    print(f"cpu time {cpu:.1f} s")


if __name__ == "__main__":
    main()
