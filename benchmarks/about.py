"""What a benchmark report says about its run: the machine, the versions, the build of the kernels
measured, and the header printed above the tables."""
import hashlib
import platform

import numpy as np

import harness
import nets
import nnscratch

# what each figure of the report means
CONVENTIONS = {
    "conv_forward_flops": "2*N*F*C*KH*KW*OH*OW",
    "conv_backward_flops": "2x forward when the input gradient is computed (conv2); 1x for conv1 (weight gradient only)",
    "fc_flops": "forward 2*N*in*out; backward 2x forward (input and weight gradients)",
    "ratio_cython_over_torch": "cython ms / torch ms (>1: cython slower)",
    "speedup_numpy_over_cython": "numpy ms / cython ms",
    "per_op": "layer forward / backward as the network calls them, bias included; torch via F.* with autograd on "
              "and torch.autograd.grad for the backward",
    "train_step": "zero_grad + forward (train mode, dropout) + NLLLoss + backward (no input gradient) + SGD momentum step",
    "inference_forward": "forward in eval mode (torch under no_grad)",
    "cores_used": "process CPU seconds / wall seconds over the timed samples of each implementation "
                  "(all rows); below the thread count when the machine is busy",
    "memory": "peak RSS during the training steps minus RSS before them, each implementation in a fresh subprocess",
    "shapes": "one Conv2d (cython, float32) against torch F.conv2d; forward, and forward + backward (dX and dW); "
              "effective GFLOP/s = direct-method FLOPs (forward 2*N*F*C*KH*KW*OH*OW, forward+backward 3x) / time",
}


def cython_available():
    """Whether the compiled backend can be used (the public API refuses it when the kernels are not built)."""
    try:
        with nnscratch.use_backend("cython"):
            return True
    except ImportError:
        return False


def kernels_identity():
    """Which build of the kernels was measured (they are being tuned): built, OpenMP, file, mtime, source hash."""
    info = nnscratch.backends.kernels_info()
    sources = sorted((nets.REPO / "nnscratch").glob("_kernels*.p[yx][xi]"))  # _kernels.pyx and the .pxi it includes
    if sources:
        info["pyx_sha256"] = hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:16]
    return info


def describe_run(threads, torch):
    """The report's description of the machine, the versions and the build."""
    import scipy
    import threadpoolctl
    info = harness.blas_info()
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "threadpoolctl": threadpoolctl.__version__, "nnscratch": nnscratch.__version__,
                "torch": torch.__version__ if torch is not None else None}
    return {"machine": harness.machine(), "versions": versions, "blas": info, "blas_lines": harness.describe_blas(info, torch),
            "torch_parallel_info": torch.__config__.parallel_info() if torch is not None else None,
            "threads": threads, "backend": nnscratch.backend(), "kernels": kernels_identity()}


def print_header(report):
    machine, versions, kernels = report["machine"], report["versions"], report["kernels"]
    torch_on = bool(versions["torch"])
    tables = [f"the seed's Net, batch {nets.BATCH}"] * bool(report["settings"]["seed_net"]) + ["convolution shapes"] * bool(
        report["settings"]["shapes"])
    print(f"nnscratch benchmark: {' and '.join(tables)}, float32")
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs ({machine['available_cores']} available), "
          f"load average {machine['loadavg_start']}")
    print(f"threads: {report['threads']} (nnscratch.set_num_threads" + (", torch.set_num_threads" if torch_on else "")
          + ", numpy BLAS for the numpy backend and the ceiling)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
          + ("" if torch_on else ", torch not available"))
    print(f"backend: {report['backend']} (kernels built: {kernels['built']}, OpenMP: {kernels['openmp']}"
          + (f", built {kernels['built_at']}" if kernels.get("built_at") else "") + ")")
    for line in report["blas_lines"]:
        print(f"BLAS: {line}")
    print(flush=True)
