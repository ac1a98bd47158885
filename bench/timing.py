"""The timing loop the Python sides of the benchmarks share (torch_bert.py, ort_bert.py):
two warm-up calls, then the mean seconds of `iters` calls."""
import time


def seconds_per_call(step, iters, warmup=2):
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters
