"""The speed paths give the plain paths' results: flat AdamW buffers and the blocked kernel, the thread pool,
the split matrix products. Checked against the reference kernels and torch (float64 ≤ 1e-10, float32 ≤ 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinytensor as tt
import tinytensor.functional as F
from tinytensor import optim
from tinytensor.kernels import adamw as kadamw
from tinytensor.kernels import matmul as kmatmul
from tinytensor.kernels import native
from tinytensor.kernels import threads


@pytest.fixture
def two_threads():
    """Force the pool on (2 threads) and tiny thresholds, so small test arrays take the parallel code paths."""
    before = (threads.get_num_threads(), threads.MIN_PARALLEL, kmatmul.PARALLEL_MACS, kmatmul.PARALLEL_GEMV,
              native.ADAPTIVE)
    threads.set_num_threads(2)
    threads.MIN_PARALLEL = kmatmul.MIN_PARALLEL = kmatmul.PARALLEL_MACS = kmatmul.PARALLEL_GEMV = 1
    native.ADAPTIVE = False  # the C kernels split too, whatever their timings would choose
    yield
    threads.set_num_threads(before[0])
    threads.MIN_PARALLEL = kmatmul.MIN_PARALLEL = before[1]
    kmatmul.PARALLEL_MACS, kmatmul.PARALLEL_GEMV, native.ADAPTIVE = before[2:]


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("shapes", [((37, 19), (19, 23)), ((5, 19), (19, 300)), ((2, 3, 17, 8), (2, 3, 8, 11))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_matmul_equals_plain(two_threads, shapes, dtype):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    out = kmatmul.matmul(a, b)
    assert out.dtype == dtype and out.shape == (a @ b).shape
    assert _rel(out, a @ b) <= (1e-12 if dtype == np.float64 else 1e-6)


def test_split_matmul_transposed_operand(two_threads):
    rng = np.random.default_rng(1)
    g, x = rng.standard_normal((40, 30)), rng.standard_normal((40, 20))
    assert _rel(kmatmul.matmul(g.T, x), g.T @ x) <= 1e-12


def test_run_chunks_covers_range_once(two_threads):
    hits = np.zeros(1000, dtype=int)

    def work(lo, hi):
        hits[lo:hi] += 1

    threads.run_chunks(work, 1000, 10**9, align=64)
    assert (hits == 1).all()


def test_single_threaded_blas_restores():
    if kmatmul._BLAS is None:
        pytest.skip("NumPy's OpenBLAS not found")
    get, _ = kmatmul._BLAS
    before = get()
    with kmatmul.single_threaded_blas():
        assert get() == 1
    assert get() == before


@pytest.mark.parametrize("wd", [0.1, 0.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocked_adamw_is_bit_identical_to_reference(two_threads, dtype, wd, kernels):
    """Blocked (NumPy) and one-pass (C) AdamW: the reference's operations in its order, so its bits exactly."""
    rng = np.random.default_rng(2)
    n = 10_000
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = (rng.standard_normal(n).astype(dtype) ** 2 for _ in range(2))
    p[:3], g[3:6] = [np.inf, -0.0, 1e-30], [np.nan, 1e30, -1e-30]  # edges go through the same operations
    ref = [a.copy() for a in (p, m, v)]
    with np.errstate(all="ignore"):
        kadamw.adamw_update(ref[0], g, ref[1], ref[2], np.empty_like(p), 1e-3, 0.9, 0.95, 1e-8, wd, 7)
        kadamw.adamw_update_blocked(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, wd, 7, block=256)
    for ours, want in zip((p, m, v), ref):
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, want)


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [tt.Parameter(rng.standard_normal(s).astype(dtype)) for s in ((7, 5), (5,), (3, 4, 2))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flat_adamw_matches_plain_and_torch(two_threads, dtype):
    flat, plain = _params(dtype), _params(dtype)
    tparams = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in plain]
    opt_flat = optim.AdamW(flat, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    opt_plain = optim.AdamW(plain, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, flat=False)
    opt_torch = torch.optim.AdamW(tparams, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    assert opt_flat.flat[0] is not None and opt_plain.flat[0] is None
    rng = np.random.default_rng(3)
    for _ in range(5):
        for opt in (opt_flat, opt_plain, opt_torch):
            opt.zero_grad()
        for pf, pp, pt in zip(flat, plain, tparams):
            w = rng.standard_normal(pf.shape).astype(dtype)
            for p in (pf, pp):
                (p * tt.Tensor(w)).sum().backward()
            (pt * torch.tensor(w)).sum().backward()
        assert opt_flat.flat[0].in_use(flat)  # backward wrote into the flat gradient buffer
        for opt in (opt_flat, opt_plain, opt_torch):
            opt.step()
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for pf, pp, pt in zip(flat, plain, tparams):
        np.testing.assert_array_equal(pf.data, pp.data)  # same kernel, same order: bit-identical
        assert _rel(pf.data, pt.detach().numpy()) <= tol
    sd = opt_flat.state_dict()
    assert sd["state"][0]["step"] == 5 and sd["state"][0]["exp_avg"].shape == (7, 5)


def test_flat_adamw_params_are_views_and_skip_missing_grads():
    ps = _params(np.float64)
    values = [p.data.copy() for p in ps]
    opt = optim.AdamW(ps, lr=0.1)
    fb = opt.flat[0]
    for p, v in zip(ps, values):
        np.testing.assert_array_equal(p.data, v)
        assert np.shares_memory(p.data, fb.params)
    (ps[0] * 2.0).sum().backward()  # only the first parameter gets a gradient: torch skips the others
    opt.step()
    assert not np.array_equal(ps[0].data, values[0])
    np.testing.assert_array_equal(ps[1].data, values[1])
    np.testing.assert_array_equal(ps[2].data, values[2])


def test_flat_adamw_load_state_dict_round_trip():
    a, b = _params(np.float64), _params(np.float64)
    oa, ob = optim.AdamW(a, lr=0.1), optim.AdamW(b, lr=0.1)
    for p in a:
        (p * p).sum().backward()
    oa.step()
    ob.load_state_dict(oa.state_dict())
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(oa.state[id(pa)]["exp_avg"], ob.state[id(pb)]["exp_avg"])
        assert np.shares_memory(ob.state[id(pb)]["exp_avg"], ob.flat[0].exp_avg)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_and_attention_with_pool_match_torch(two_threads, dtype):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 9, 16)).astype(dtype), rng.standard_normal((12, 16)).astype(dtype)
    q, k, v = (rng.standard_normal((2, 3, 9, 8)).astype(dtype) for _ in range(3))
    dout = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    ours = [tt.Tensor(a, requires_grad=True) for a in (x, w, q, k, v)]
    ref = [torch.tensor(a, requires_grad=True) for a in (x, w, q, k, v)]
    F.linear(ours[0], ours[1]).sum().backward()
    torch.nn.functional.linear(ref[0], ref[1]).sum().backward()
    F.scaled_dot_product_attention(*ours[2:], is_causal=True).backward(tt.Tensor(dout))
    torch.nn.functional.scaled_dot_product_attention(*ref[2:], is_causal=True).backward(torch.tensor(dout))
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for o, r in zip(ours, ref):
        assert _rel(o.grad.data, r.grad.numpy()) <= tol


def _softmax64(x):
    """Row softmax in float64 NumPy, the reference for the kernels' values."""
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(2, 3, 50, 50), (3, 701), (900, 3), (7, 5, 1)])
def test_softmax_row_blocks_repeat_their_bits_at_any_thread_count(shape, monkeypatch):
    """Row blocks (small here, so several per thread) give the same bits at 1 and 2 threads (a block's rows do not
    depend on the thread count), and the one-shot kernel's values to rounding (the row sums are BLAS products whose
    last bits depend on how many rows a call holds), forward and backward."""
    from tinytensor.kernels import softmax as ksm

    monkeypatch.setattr(threads, "MIN_PARALLEL", 1)
    before = threads.get_num_threads()
    rng = np.random.default_rng(1)
    try:
        for dtype in (np.float32, np.float64):
            x, g = (rng.standard_normal(shape).astype(dtype) * 4 for _ in range(2))
            tol = 1e-6 if dtype == np.float32 else 1e-14
            monkeypatch.setattr(ksm, "BLOCK", 1 << 40)  # the one-shot kernel
            ref = ksm.softmax_forward(x)
            dref = ksm.softmax_backward(g, ref)
            assert _rel(ref, _softmax64(x)) <= tol
            monkeypatch.setattr(ksm, "BLOCK", 64)
            runs = []
            for n in (1, 2, 2):
                threads.set_num_threads(n)
                p = ksm.softmax_forward(x)
                runs.append((p, ksm.softmax_backward(g, p)))
            for p, dx in runs:
                assert p.dtype == dx.dtype == dtype
                np.testing.assert_array_equal(p, runs[0][0])
                np.testing.assert_array_equal(dx, runs[0][1])
            assert _rel(runs[0][0], ref) <= tol and _rel(runs[0][1], dref) <= 10 * tol
    finally:
        threads.set_num_threads(before)
    # not along the last axis, or not contiguous: the one-shot path, same values
    x = np.random.default_rng(2).standard_normal((6, 40, 3))
    np.testing.assert_allclose(ksm.softmax_forward(x, axis=1).sum(axis=1), 1.0, rtol=1e-15)
    xt = x.transpose(2, 1, 0)
    assert _rel(ksm.softmax_forward(xt), ksm.softmax_forward(np.ascontiguousarray(xt))) <= 1e-15



@pytest.fixture
def matmul_mode():
    before = kmatmul.get_matmul_threading()
    yield kmatmul.set_matmul_threading
    kmatmul.set_matmul_threading(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_ways_agree(matmul_mode, dtype):
    """pool, blas and auto (the default) against single-threaded BLAS, plain and transposed operands, 2-D and batched,
    small and above the split threshold: equal to rounding, ≤ 1e-5 (float32) / 1e-13 (float64) relative to the
    largest output (a row block or a threaded kernel may take another micro-kernel at its edge: the last bits can
    differ), each way repeats its own bits, and auto's are the pool's whichever way it runs (both ways alternate
    at first)."""
    rng = np.random.default_rng(5)
    cases = [((m, k), (k, n)) for m in (1, 17, 300) for k in (8, 128, 700) for n in (3, 64, 513)]
    cases += [((6, 33, 16), (6, 16, 40)), ((4, 128, 64), (4, 64, 128))]
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for sa, sb in cases:
        a = rng.standard_normal(sa).astype(dtype)
        for b in (rng.standard_normal(sb).astype(dtype),
                  rng.standard_normal(sb[:-2] + sb[:-3:-1]).astype(dtype).swapaxes(-1, -2)):
            with kmatmul.single_threaded_blas():
                want = a @ b
            got = {}
            for mode in ("pool", "blas", "auto"):
                matmul_mode(mode)
                outs = got[mode] = [kmatmul.matmul(a, b) for _ in range(5)]  # auto: both ways, then its pick
                assert all(o.dtype == dtype and _rel(o, want) <= tol for o in outs), f"{mode} {sa} @ {b.shape}"
                for o in outs[1:]:
                    np.testing.assert_array_equal(o, outs[0])
            for o in got["auto"]:
                np.testing.assert_array_equal(o, got["pool"][0])


def test_auto_leaves_shapes_whose_ways_disagree_to_the_pool(matmul_mode, monkeypatch):
    """A shape and layout whose two ways differ in the last bit (forced here by a pool one ulp off) is never run the
    blas way, however often it comes; operands with other strides are not probed at all; the probe is cached."""
    matmul_mode("auto")
    real = kmatmul._pool_matmul
    monkeypatch.setattr(kmatmul, "_pool_matmul", lambda a, b: np.nextafter(real(a, b), np.inf))
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((40, 30)).astype(np.float32), rng.standard_normal((20, 30)).astype(np.float32).T
    if kmatmul._BLAS is None:
        pytest.skip("NumPy's OpenBLAS not found: auto never switches")
    assert not kmatmul.ways_agree(a, b) and len(kmatmul._AGREE) == 1
    for _ in range(20):
        np.testing.assert_array_equal(kmatmul.matmul(a, b), np.nextafter(real(a, b), np.inf))
    assert len(kmatmul._AGREE) == 1 and not kmatmul.ways_agree(a[:, ::2], b[::2])
    monkeypatch.setattr(kmatmul, "_pool_matmul", real)
    kmatmul.set_matmul_threading("auto")  # forgets the probes
    assert kmatmul.ways_agree(a, b)  # the real ways agree at this size (both one single-threaded product)


def test_auto_matmul_runs_the_faster_way_and_re_times_the_slower(matmul_mode):
    """The timing rule of "auto": the faster way runs, the slower is re-timed at a rate that costs ~1% of the time."""
    matmul_mode("auto")
    c = 20
    seconds = {0: 10e-9, 1: 1e-9}  # pool 10x slower than blas per multiply-add
    first = []
    for _ in range(4):  # both ways alternately until each has two timings (the first of each is dropped)
        way = kmatmul._choose(c)
        first.append(way)
        kmatmul._record(c, way, seconds[way])
    assert first == [0, 1, 0, 1]
    picks = [kmatmul._choose(c) for _ in range(2000)]
    assert picks.count(0) == 2 and picks.count(1) == len(picks) - 2  # pool re-timed once per 100 * (10 - 1) calls
    kmatmul._stats[c][:2] = [1.2e-9, 1e-9]  # pool 1.2x slower: re-timed once per EXPLORE calls
    assert [kmatmul._choose(c) for _ in range(10 * kmatmul.EXPLORE)].count(0) == 10
    with pytest.raises(ValueError, match="must be one of auto, pool, blas"):
        kmatmul.set_matmul_threading("mkl")


def test_way_timer_re_times_a_stale_slower_way_once(monkeypatch):
    """A way that lost on timings taken during a disturbance is re-timed once its last timing is STALE_S old (one
    call, not every call until that timing comes back), then the count rule holds again."""
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    timer = threads.WayTimer()
    for way in (0, 1, 0, 1):
        assert timer.choose("c") == way
        timer.record("c", way, 1e-9 if way == 0 else 5e-9)  # way 1 5x slower: count rule, once per 400 calls
    assert [timer.choose("c") for _ in range(50)] == [0] * 50
    clock[0] += threads.STALE_S + 0.1
    assert [timer.choose("c") for _ in range(50)] == [1] + [0] * 49
    for _ in range(6):  # the disturbance is gone: way 1 is now the faster (its average moves a quarter per timing)
        clock[0] += threads.STALE_S + 0.1
        assert timer.choose("c") == 1
        timer.record("c", 1, 0.1e-9)
    picks = [timer.choose("c") for _ in range(50)]
    assert picks[0] == 0 and picks[1:].count(0) <= 1  # way 0's timing is stale now: once; the count rule's once


def test_way_timer_keeps_a_large_class_to_the_count_rule(monkeypatch):
    """A class whose calls are large (one re-timing would cost over 1% of STALE_S more than the faster way) is not
    re-timed for staleness: 10^7 units at 4 ns/unit slower is 40 ms a call, 4% of a second."""
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    timer = threads.WayTimer()
    for way in (0, 1, 0, 1):
        assert timer.choose("big") == way
        timer.record("big", way, 1e-9 if way == 0 else 5e-9, units=10**7)
    clock[0] += 10 * threads.STALE_S
    assert [timer.choose("big") for _ in range(50)] == [0] * 50


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blas_row_and_column_sums_match_float64_sums(dtype):
    """kernels/reduce.py: Σ over the last axis and over rows as products with ones, against float64 NumPy sums
    (float64 ≤ 1e-14, float32 ≤ 1e-6 relative to the largest |sum| of absolute values); other arrays take sum."""
    from tinytensor.kernels import reduce as kreduce

    rng = np.random.default_rng(7)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    for shape in [(768, 128), (3, 4, 64, 64), (5, 1), (1, 701), (9,)]:
        x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
        want = x.astype(np.float64).sum(-1, keepdims=True)
        scale = np.abs(x.astype(np.float64)).sum(-1).max()
        got = kreduce.row_sum(x)
        assert got.dtype == dtype and got.shape == want.shape
        assert np.abs(got - want).max() <= tol * scale
        mean = kreduce.row_mean(x)
        assert mean.dtype == dtype and np.abs(mean - want / shape[-1]).max() <= tol * scale / shape[-1]
        if x.ndim == 2:
            col = kreduce.col_sum(x)
            assert col.dtype == dtype and col.shape == (shape[1],)
            assert np.abs(col - x.astype(np.float64).sum(0)).max() <= tol * np.abs(x.astype(np.float64)).sum(0).max()
    # strided, integer and empty arrays take NumPy's sum: same values and dtypes as sum
    xt = rng.standard_normal((40, 30)).astype(dtype).T
    np.testing.assert_array_equal(kreduce.row_sum(xt), xt.sum(-1, keepdims=True))
    ints = np.arange(12).reshape(3, 4)
    assert kreduce.row_sum(ints).tolist() == [[6], [22], [38]] and kreduce.col_sum(ints).tolist() == [12, 15, 18, 21]
    assert kreduce.row_sum(np.zeros((0, 5), dtype)).shape == (0, 1)
    assert kreduce.row_sum(np.zeros((3, 0), dtype)).tolist() == [[0], [0], [0]]
    # special values propagate as in a sum
    special = np.array([[1, np.inf, 2], [np.nan, 1, 1], [np.inf, -np.inf, 0], [1e30, 1e30, -1e30]], dtype)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(kreduce.row_sum(special)[:3], special[:3].sum(-1, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_causal_softmax_diagonal_shift_and_its_overflow_fallback(dtype, kernels):
    """The fused causal attention shifts each row by its diagonal score: ordinary scores give torch's result, and
    rows whose largest score lies far above the diagonal (here up to ~10^4 in float32's and float64's overflow range)
    take the maximum instead: finite, and torch's to the same tolerance (float64 ≤ 1e-10, float32 ≤ 1e-5)."""
    from tinytensor.kernels import attention as katt

    rng = np.random.default_rng(11)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for spread in (1.0, 40.0, 3000.0):  # the last: scores of ±10^4, a diagonal far below the row maximum
        q, k, v = (rng.standard_normal((2, 3, 9, 4)).astype(dtype) for _ in range(3))
        q *= spread
        out, saved = katt.attention_forward(q, k, v, is_causal=True)
        want = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(a, dtype=torch.float64)
                                                                  for a in (q, k, v)), is_causal=True).numpy()
        assert np.isfinite(out).all() and np.isfinite(saved["probs"]).all()
        assert _rel(out, want) <= tol, spread
        np.testing.assert_allclose(saved["probs"].sum(-1), 1.0, rtol=10 * np.finfo(dtype).eps)
    scores = np.array([[[0.0, -np.inf], [200.0, 0.0]]], dtype)  # row 2: 200 above its diagonal
    p = katt._softmax_diagonal_shift(scores.copy())  # e^200 is finite only in float64
    if dtype == np.float32:
        assert p is None  # the caller recomputes with the maximum
    else:
        np.testing.assert_allclose(p[0], [[1.0, 0.0], [1.0, np.exp(-200.0)]], rtol=1e-14)


def test_pool_chunks_concurrent_callers_errors_and_fork(two_threads):
    """The pool's ranges cover [0, n) once on multiples of align, the caller's a little longer; a second thread
    calling at the same time runs its kernel inline (same result); an error in a worker's range reaches the caller
    and leaves the pool usable; a forked child (a DataLoader worker) gets a pool of its own."""
    import multiprocessing
    import threading as _threading

    for n, k, align in [(768, 2, 1), (1000, 2, 64), (7, 2, 1), (100, 3, 1), (10, 4, 3), (2, 2, 1)]:
        bounds = threads._bounds(n, k, align)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(lo % align == 0 and hi > lo for lo, hi in bounds) and len(bounds) <= k
        assert bounds[0][1] - bounds[0][0] >= max(hi - lo for lo, hi in bounds[1:])
    out = np.zeros((2, 100_000))

    def fill(row):
        def work(lo, hi):
            out[row, lo:hi] += row + 1
        threads.run_chunks(work, out.shape[1], 10**9)

    callers = [_threading.Thread(target=fill, args=(r,)) for r in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    np.testing.assert_array_equal(out, [[1.0] * 100_000, [2.0] * 100_000])

    def fail_in_worker(lo, hi):
        if lo > 0:
            raise ValueError("bad range")

    with pytest.raises(ValueError, match="bad range"):
        threads.run_chunks(fail_in_worker, 10, 10**9)
    hits = np.zeros(10, dtype=int)
    threads.run_chunks(lambda lo, hi: hits.__setitem__(slice(lo, hi), hits[lo:hi] + 1), 10, 10**9)
    assert (hits == 1).all()
    if "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply(_sum_in_pool, (1000,)) == 1000 * 999 // 2


def _sum_in_pool(n: int) -> int:
    """Σ range(n) computed in chunks on the pool (run in a forked child)."""
    parts = np.zeros(n, dtype=np.int64)

    def work(lo, hi):
        parts[lo:hi] = np.arange(lo, hi)

    threads.run_chunks(work, n, 10**9)
    return int(parts.sum())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the nan rows, as torch's
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_first_element_shift_and_its_fallback(dtype):
    """The standalone softmax shifts each row by its first element, or by its maximum where that overflows: rows
    spread over 10^4, a masked (−inf) first element, fully masked rows, nan and +inf give torch's values (nan where
    torch gives nan), one-shot and by row blocks (float64 ≤ 1e-10, float32 ≤ 1e-5)."""
    from tinytensor.kernels import softmax as ksm

    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 300)) * np.array([1, 5, 40, 3000, 1, 1])[:, None]
    x[4, :7] = -np.inf
    x[5, :] = -np.inf
    x = x.astype(dtype)
    bad = np.array([[1.0, np.nan, 2.0], [1.0, np.inf, 2.0], [np.inf, -np.inf, 0.0]], dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for block in (1 << 40, 300):  # one-shot, then one row per block
        ksm.BLOCK, before = block, ksm.BLOCK
        try:
            for a in (x, bad):
                got = ksm.softmax_forward(a)
                want = torch.softmax(torch.tensor(a, dtype=torch.float64), -1).numpy()
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
                ok = ~np.isnan(want)
                assert np.abs(got[ok] - want[ok]).max(initial=0.0) <= tol
        finally:
            ksm.BLOCK = before


def test_causal_bias_keeps_masked_nan_keys_out(kernels):
    """The causal mask is added as 0 / −∞; a nan in a key that a query may not see (a future position) would turn
    that row's sum into nan, and the fallback then masks by filling: the rows before it keep the values they have
    with the key zeroed (to rounding: the fallback shifts by the maximum), the last row (which sees it) is nan.
    The C kernel never reads the masked scores: the same rows, the same nan."""
    from tinytensor.kernels import attention as katt

    rng = np.random.default_rng(13)
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    k_nan, k_zero = k.copy(), k.copy()
    k_nan[..., -1, :], k_zero[..., -1, :] = np.nan, 0.0
    with np.errstate(invalid="ignore"):
        out, _ = katt.attention_forward(q, k_nan, v, is_causal=True)
    want, _ = katt.attention_forward(q, k_zero, v, is_causal=True)
    assert _rel(out[..., :-1, :], want[..., :-1, :]) <= 1e-14  # the fallback's shift rounds differently
    assert np.isnan(out[..., -1, :]).all()
    assert katt._causal_bias(3, 5, np.float32).tolist() == [[0, -np.inf, -np.inf, -np.inf, -np.inf],
                                                           [0, 0, -np.inf, -np.inf, -np.inf],
                                                           [0, 0, 0, -np.inf, -np.inf]]
