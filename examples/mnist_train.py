"""The seed article's section 4 (MNIST, PyTorch) written with nnscratch, line for line.

Each block quotes the seed's PyTorch lines in comments above their nnscratch counterpart, so the
two can be read side by side. Run from the repository root::

    python examples/mnist_train.py                      # the seed's 10 epochs
    python examples/mnist_train.py --epochs 1 --limit 5000   # a quick run (a few minutes)
    python examples/mnist_train.py --epochs 3 --checkpoint run.safetensors --json run.json --plot run.png
    python examples/mnist_train.py --epochs 5 --checkpoint run.safetensors --resume run.safetensors

MNIST is read offline from the repository's ``data/mnist/`` (or ``$NNSCRATCH_DATA``, or the
user cache; see :func:`nnscratch.data.load_mnist`). A resumed run must be given the same
``--seed``, ``--limit`` and ``--batch-size`` as the run that wrote the checkpoint.

Two deliberate differences from the seed, both explained where they occur: the loss is
``NLLLoss`` (the seed applies ``CrossEntropyLoss``, i.e. a second log-softmax, to ``log_softmax`` outputs),
and the loss is printed every 200 mini-batches instead of 2000 (an epoch has only 938).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import nnscratch as nn
from nnscratch import malloc, plot
from nnscratch.data import DataLoader, load_mnist, prepare_images

# The seed prints the running loss every 2000 mini-batches (`if i % 2000 == 1999`), but with
# batch_size=64 an MNIST epoch is ceil(60000 / 64) = 938 mini-batches, so that line never
# appears. Every 200 gives four lines per epoch, each the mean of the last 200 losses.
LOG_EVERY = 200

# The seed's testloader also uses batch_size=64. The batch size of an evaluation changes no
# result (eval mode: no dropout, every image is scored on its own), only the speed, and larger
# batches keep the compiled kernels busier.
TEST_BATCH_SIZE = 500


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train (the seed: 10)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on the first N images of a seeded shuffle of the training set (quick runs)")
    parser.add_argument("--batch-size", type=int, default=64, help="training mini-batch size (the seed: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, dropout masks and shuffles")
    parser.add_argument("--log-every", type=int, default=LOG_EVERY, metavar="N",
                        help=f"print the seed's loss line every N mini-batches (default {LOG_EVERY})")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write test accuracy, per-epoch history, wall time, backend and threads as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="save learning curves (PNG)")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH", help="write a checkpoint after every epoch")
    parser.add_argument("--resume", type=Path, metavar="PATH", help="continue from a checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, loss lines or epoch summaries")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    nn.manual_seed(args.seed)  # torch.manual_seed: the seed itself sets none, so its runs differ

    # ---- 4.1 data preparation ------------------------------------------------------------
    # transform = transforms.Compose([
    #     transforms.ToTensor(),                  # uint8 (H, W) -> float (1, H, W) in [0, 1]: x / 255
    #     transforms.Normalize((0.5,), (0.5,))])  # (x - 0.5) / 0.5, into [-1, 1]
    def transform(images):
        return prepare_images(images, mean=0.5, std=0.5)  # (images / 255 - 0.5) / 0.5

    # trainset = torchvision.datasets.MNIST(root='./data', train=True, download=True, transform=transform)
    # testset = torchvision.datasets.MNIST(root='./data', train=False, download=True, transform=transform)
    (train_images, train_labels), (test_images, test_labels) = load_mnist(download=False)
    if args.limit is not None:  # not in the seed: a quick run on part of the training set
        keep = np.random.default_rng(args.seed).permutation(len(train_labels))[:args.limit]
        train_images, train_labels = train_images[keep], train_labels[keep]

    # trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)
    trainloader = DataLoader(train_images, train_labels, batch_size=args.batch_size, shuffle=True,
                             seed=args.seed, transform=transform)
    # testloader = torch.utils.data.DataLoader(testset, batch_size=64, shuffle=False)
    testloader = DataLoader(test_images, test_labels, batch_size=TEST_BATCH_SIZE, shuffle=False,
                            transform=transform)

    # ---- 4.2 model definition ------------------------------------------------------------
    # net = Net()   (conv1, conv2, max_pool2d, dropout1, flatten, fc1, dropout2, fc2, log_softmax)
    net = nn.models.seed_net()

    # ---- 4.3 training --------------------------------------------------------------------
    # criterion = nn.CrossEntropyLoss()
    # Net ends in log_softmax, so its outputs are already log-probabilities, and
    # CrossEntropyLoss applies log_softmax to them again. That happens to change nothing
    # (log-softmax of log-probabilities is themselves: Σ exp(y) = 1), so the seed's numbers
    # stand, but it is wasted work and hides which loss is meant. The loss that pairs with
    # log-probability outputs is the negative log-likelihood, NLLLoss; CrossEntropyLoss is
    # for networks that end in logits (it is log_softmax followed by NLLLoss).
    criterion = nn.NLLLoss()
    # optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def report(epoch, history):  # not in the seed: one summary line per epoch
        if not args.quiet:
            print("epoch %d: train loss %.4f, accuracy %.2f %% | test loss %.4f, accuracy %.2f %% | %.1f s" % (
                epoch, history.train_loss[-1], 100 * history.train_accuracy[-1],
                history.val_loss[-1], 100 * history.val_accuracy[-1], history.epoch_time[-1]), flush=True)

    # for epoch in range(10):  # loop over the dataset multiple times
    #     running_loss = 0.0
    #     for i, data in enumerate(trainloader, 0):
    #         inputs, labels = data
    #         optimizer.zero_grad()
    #         outputs = net(inputs)
    #         loss = criterion(outputs, labels)
    #         loss.backward()
    #         optimizer.step()
    #         running_loss += loss.item()
    #         if i % 2000 == 1999:  # print every 2000 mini-batches
    #             print('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / 2000))
    #             running_loss = 0.0
    # fit() runs exactly this loop (see nnscratch.training), prints the same line every
    # `log_every` mini-batches, and after every epoch scores the network on the test set
    # (val_loader: the learning curves) and writes the checkpoint.
    history = nn.fit(
        net, criterion, optimizer, trainloader, args.epochs, val_loader=testloader,
        checkpoint=args.checkpoint, resume=args.resume,
        progress=False if args.quiet else None,  # a tqdm bar when stderr is a terminal
        log_every=None if args.quiet else args.log_every,
        callback=report,
    )
    # print('Finished Training')
    print("Finished Training")

    # ---- 4.5 evaluation ------------------------------------------------------------------
    # correct = 0
    # total = 0
    # with torch.no_grad():
    #     for data in testloader:
    #         images, labels = data
    #         outputs = net(images)
    #         _, predicted = torch.max(outputs.data, 1)
    #         total += labels.size(0)
    #         correct += (predicted == labels).sum().item()
    # That loop is nn.evaluate(net, criterion, testloader) (eval mode, argmax, counts). fit()
    # ran it on the test set after the last epoch already (val_loader=testloader), on the same
    # weights, so its figure is reused rather than spending a second pass over 10000 images.
    if len(history.val_accuracy) == history.epochs:
        test_loss, test_accuracy = history.val_loss[-1], history.val_accuracy[-1]
        total = len(test_labels)
    else:  # e.g. resumed from a checkpoint written without test evaluation
        result = nn.evaluate(net, criterion, testloader)
        test_loss, test_accuracy, total = result["loss"], result["accuracy"], result["count"]
    correct = round(test_accuracy * total)
    wall_time = time.perf_counter() - started

    if args.json is not None:
        args.json.write_text(json.dumps({
            "test_accuracy": test_accuracy,
            "test_accuracy_percent": 100 * correct / total,
            "test_correct": correct,
            "test_total": total,
            "test_loss": test_loss,
            "history": history.as_dict(),
            "wall_time": wall_time,
            "backend": nn.backend(),
            "threads": nn.get_num_threads(),
            "epochs": history.epochs,
            "train_samples": len(train_labels),
            "batch_size": args.batch_size,
            "seed": args.seed,
        }, indent=2) + "\n")
    if args.plot is not None:  # loss per batch and per epoch, accuracy per epoch (see nnscratch.plot.history)
        plot.history(history, title="seed_net on MNIST (nnscratch)").savefig(args.plot, dpi=100)

    print("Test accuracy: %.2f %% (%d/%d), test loss %.4f, wall time %.1f s" % (
        100 * correct / total, correct, total, test_loss, wall_time))
    # print('Accuracy of the network on the 10000 test images: %d %%' % (100 * correct / total))
    print("Accuracy of the network on the %d test images: %d %%" % (total, 100 * correct / total))
    return history


if __name__ == "__main__":
    # a training script may keep freed memory for reuse (fewer page faults per step); a library
    # import never does this, since it holds for the whole process: see nnscratch/malloc.py
    malloc.keep_freed_memory()
    main()
