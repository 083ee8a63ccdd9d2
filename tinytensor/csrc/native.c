/* tinytensor's native CPU kernels: the elementwise and row-wise passes NumPy cannot fuse (LayerNorm, GELU,
 * softmax), one loop over the data per pass instead of one NumPy call per arithmetic step.
 *
 * Each kernel is the C twin of its NumPy pair in tinytensor/kernels/ (the equations are in those docstrings and
 * docs/), for float32 (suffix _f32) and float64 (_f64). It works on a range of rows or elements that the caller
 * (tinytensor/kernels/native.py) hands out to the thread pool; calls through ctypes release the GIL, so two ranges
 * run on two cores. Plain C99, no Python headers: the library is loaded with ctypes, never imported.
 *
 * float32 uses exp32 below (vectorisable, so GCC turns the loops into AVX-512/AVX2/SSE code, one clone each,
 * picked when the library loads); float64 keeps the C library's exp, erfc and tanh, so the float64 gradient
 * checks compare the C library's rounding against torch's.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */
#include <pthread.h>
#include <sched.h>
#include <time.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STACK_ROW 2048 /* keys per row kept on the stack; longer rows take a heap buffer */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define CLONES
#endif

/* Helpers are always inlined into the kernels: a helper the compiler keeps out of line is compiled once, for the
 * baseline target, and its loops lose the clone's vectors (softmax's row, once its max loop grew, ran 25x slower) */
#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

#if defined(_WIN32)
#define API __declspec(dllexport)
/* setuptools links every extension with an export of PyInit_<name>; nothing imports this library, so a stub */
API void *PyInit__native(void) { return 0; }
#else
#define API __attribute__((visibility("default")))
#endif

/* What the loaded code can use: 3 AVX-512 clones, 2 AVX2+FMA, 1 FMA elsewhere (aarch64), 0 no FMA in hardware.
 * The float32 kernels lean on fmaf; without the instruction it is a slow library call (30x) and NumPy's own SIMD
 * loops win, so tinytensor/kernels/native.py turns the C kernels off at 0. */
API int simd_level(void)
{
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
    return 0;
#elif defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    return 1;
#else
    return 0;
#endif
}

#define SQRT_2_OVER_PI 0.7978845608028654
#define GELU_K 0.044715
#define INV_SQRT_2PI 0.3989422804014327

/* ---------------------------------------------------------------------------------------------- exp, float32
 * e^x = 2^n · e^r with n = round(x·log₂e) and r = x − n·ln 2, |r| ≤ ln2/2 (ln 2 in two parts, Cody & Waite 1980,
 * so r is exact to float32 rounding). e^r by its Taylor polynomial to r⁷ (the remainder below r⁸/8! ≈ 5e-9 of
 * e^r, under float32's relative spacing of 6e-8). 2^n is built in the exponent bits in two factors so that the
 * full range, denormals included, comes out right: n runs from −150 (x = −104, where e^x rounds to 0) to 128. */
/* e^r for the reduced argument of xc (already clamped by the caller), and n in *n: the part exp32 and
 * sigmoid_neg32 share */
INLINE float exp32_reduced(float xc, float *n)
{
    float k = rintf(xc * 1.44269504088896341f);
    float r = fmaf(k, -0.693145751953125f, xc);
    r = fmaf(k, -1.428606765330187e-06f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    *n = k;
    return p;
}

INLINE float exp32(float x)
{
    float xc = x > -104.0f ? x : -104.0f; /* written as selects (a nan becomes −104 here, and nan at the end): */
    xc = xc < 88.72283f ? xc : 88.72283f; /* fminf/fmaxf would be calls, and the loops would not vectorise */
    float n, p = exp32_reduced(xc, &n);
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1, n2 = ni - n1;
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float y = p * s1 * s2;
    y = x > 88.72283f ? INFINITY : y;
    return x != x ? x : y;
}

/* σ(−t) = 1/(1 + e^t) for the GELUs, and e^t·σ(−t) = 1 − σ(−t) in *es: exp32's steps on t clamped to [−87, 88],
 * where 2^n is one normal scale factor (n in [−126, 127]) and e^t cannot overflow, so none of exp32's range
 * selects are needed (they were a quarter of exact GELU's loop). Outside: t < −87 gives σ = 1 (e^t < 2^−125, far
 * under float32's spacing at 1) and es = 0; t > 88 gives σ = 0 and es = 0, the limits exp32 reached through inf;
 * a nan t gives σ = 1, and the callers' x carries the nan into their results. */
INLINE float sigmoid_neg32(float t, float *es)
{
    float tc = t > -87.0f ? t : -87.0f;
    tc = tc < 88.0f ? tc : 88.0f;
    float n, p = exp32_reduced(tc, &n);
    int32_t b = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &b, 4);
    float e = p * scale;
    float s = 1.0f / (1.0f + e);
    s = t > 88.0f ? 0.0f : s;
    *es = t < -87.0f ? 0.0f : e * s;
    return s;
}

/* e^x elementwise by exp32 (the tests check it against float64 over float32's whole range) */
API CLONES void exp_f32(const float *x, float *out, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = exp32(x[i]);
}

/* ---------------------------------------------------------------------------------------------- row sums
 * Σ_j EXPR over j < n into OUT, in LANES(T) independent lanes (16 float32 or 8 float64: one AVX-512 vector, two
 * AVX2 ones), folded in halves. The fold's order is fixed, so the bits do not depend on the clone that runs (the
 * compiler's own `omp simd reduction` folds as wide as the clone's vectors). Measured one thread, float32,
 * LayerNorm forward/backward µs at (1024,64): 16 lanes 30/39, 32 lanes 44/47, 64 lanes 52/52, the compiler's
 * reduction 38/39; at (512,768): 134/167, 152/184, 131/171, 141/161. EXPR reads the element index j. */
#define LANES(T) ((int)(64 / sizeof(T)))
#define LANE_LOOP(T, n, BODY)                                                                                     \
    int64_t j0_ = 0;                                                                                              \
    for (; j0_ + LANES(T) <= (n); j0_ += LANES(T)) {                                                              \
        _Pragma("omp simd") for (int k_ = 0; k_ < LANES(T); k_++) { int64_t j = j0_ + k_; BODY; }                 \
    }                                                                                                             \
    _Pragma("omp simd") for (int k_ = 0; k_ < (n) - j0_; k_++) { int64_t j = j0_ + k_; BODY; }
#define LANE_FOLD(a, OP)                                                                                          \
    for (int w_ = (int)(sizeof(a) / sizeof(a[0])) / 2; w_ > 0; w_ /= 2) {                                         \
        _Pragma("omp simd") for (int k_ = 0; k_ < w_; k_++) a[k_] = OP(a[k_], a[k_ + w_]);                        \
    }
#define ADD_(u, v) ((u) + (v))
#define LANE_SUM(T, n, EXPR, OUT)                                                                                 \
    do {                                                                                                          \
        T a_[LANES(T)] = {0};                                                                                     \
        LANE_LOOP(T, n, a_[k_] += (EXPR))                                                                         \
        LANE_FOLD(a_, ADD_)                                                                                       \
        OUT = a_[0];                                                                                              \
    } while (0)
/* two sums in one pass over the same elements (LayerNorm's backward reads dout, w and x once for both) */
#define LANE_SUM2(T, n, EXPR1, EXPR2, OUT1, OUT2)                                                                 \
    do {                                                                                                          \
        T a_[LANES(T)] = {0}, b_[LANES(T)] = {0};                                                                 \
        LANE_LOOP(T, n, a_[k_] += (EXPR1); b_[k_] += (EXPR2))                                                     \
        LANE_FOLD(a_, ADD_)                                                                                       \
        LANE_FOLD(b_, ADD_)                                                                                       \
        OUT1 = a_[0];                                                                                             \
        OUT2 = b_[0];                                                                                             \
    } while (0)
/* the row maximum; a nan is passed over here (v > m is false), and the caller's Σ e^(x − m) carries it into every
 * output of its row */
#define MAX_(u, v) ((v) > (u) ? (v) : (u))
#define LANE_MAX(T, n, EXPR, OUT)                                                                                 \
    do {                                                                                                          \
        T a_[LANES(T)];                                                                                           \
        for (int k_ = 0; k_ < LANES(T); k_++) a_[k_] = -INFINITY;                                                 \
        LANE_LOOP(T, n, a_[k_] = MAX_(a_[k_], (EXPR)))                                                            \
        LANE_FOLD(a_, MAX_)                                                                                       \
        OUT = a_[0];                                                                                              \
    } while (0)

/* ---------------------------------------------------------------------------------------------- layer norm
 * out = w ⊙ (x − mean)·rstd + b over rows of c; mean and rstd saved per row (tinytensor/kernels/layer_norm.py).
 * Two passes over each row (mean, then Σ(x − mean)²), as the NumPy kernel: no cancellation from E[x²] − mean². */
#define LAYER_NORM(T, SUF)                                                                                        \
    API CLONES void layer_norm_fwd_##SUF(const T *x, const T *w, const T *b, T *out, T *mean, T *rstd,          \
                                         int64_t rows, int64_t c, double eps)                                     \
    {                                                                                                             \
        for (int64_t i = 0; i < rows; i++) {                                                                      \
            const T *xr = x + i * c;                                                                              \
            T *o = out + i * c;                                                                                   \
            T s, v;                                                                                               \
            LANE_SUM(T, c, xr[j], s);                                                                             \
            T m = s / (T)c;                                                                                       \
            LANE_SUM(T, c, (xr[j] - m) * (xr[j] - m), v);                                                         \
            T r = (T)(1.0 / sqrt((double)(v / (T)c) + eps));                                                      \
            mean[i] = m;                                                                                          \
            rstd[i] = r;                                                                                          \
            if (w && b) {                                                                                         \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] = (xr[j] - m) * r * w[j] + b[j];         \
            } else if (w) {                                                                                       \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] = (xr[j] - m) * r * w[j];                \
            } else if (b) {                                                                                       \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] = (xr[j] - m) * r + b[j];                \
            } else {                                                                                              \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] = (xr[j] - m) * r;                       \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    /* dx = rstd·(g − mean_j g − x̂·mean_j(g ⊙ x̂)), g = dout ⊙ w, for rows [r0, r1); dw += Σ dout ⊙ x̂ and        \
     * db += Σ dout accumulate per block of `block` rows into part[block][0] and part[block][1] (zeroed by the      \
     * caller, summed over the blocks afterwards: the same bits whichever thread ran which rows). w may be NULL. */ \
    API CLONES void layer_norm_bwd_##SUF(const T *dout, const T *x, const T *w, const T *mean, const T *rstd,   \
                                         T *dx, T *part, int64_t r0, int64_t r1, int64_t c, int64_t block)        \
    {                                                                                                             \
        for (int64_t i = r0; i < r1; i++) {                                                                       \
            T *dw = part + (i / block) * 2 * c, *db = dw + c; /* this row's block's partial sums */               \
            const T *d = dout + i * c, *xr = x + i * c;                                                           \
            T *o = dx + i * c;                                                                                    \
            T m = mean[i], r = rstd[i], sg, sgx;                                                                  \
            if (w)                                                                                                \
                LANE_SUM2(T, c, d[j] * w[j], (d[j] * w[j]) * ((xr[j] - m) * r), sg, sgx);                         \
            else                                                                                                  \
                LANE_SUM2(T, c, d[j], d[j] * ((xr[j] - m) * r), sg, sgx);                                         \
            T gm = sg / (T)c, gxm = sgx / (T)c;                                                                   \
            if (w) {                                                                                              \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) {                                             \
                    T xh = (xr[j] - m) * r;                                                                       \
                    o[j] = r * (d[j] * w[j] - gm - xh * gxm);                                                     \
                }                                                                                                 \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) dw[j] += d[j] * ((xr[j] - m) * r);            \
            } else {                                                                                              \
                _Pragma("omp simd") for (int64_t j = 0; j < c; j++) {                                             \
                    T xh = (xr[j] - m) * r;                                                                       \
                    o[j] = r * (d[j] - gm - xh * gxm);                                                            \
                }                                                                                                 \
            }                                                                                                     \
            _Pragma("omp simd") for (int64_t j = 0; j < c; j++) db[j] += d[j];                                    \
        }                                                                                                         \
    }

LAYER_NORM(float, f32)
LAYER_NORM(double, f64)

/* ---------------------------------------------------------------------------------------------- softmax
 * p = e^(x − max)/Σ e^(x − max) along rows of c; dx = p ⊙ (dout − Σ dout ⊙ p) (tinytensor/kernels/softmax.py).
 * A row of −∞ gives nan, as torch. */
#define SOFTMAX(T, SUF, EXP)                                                                                      \
    /* one row: o = softmax(x), and *m its maximum; returns Σ e^(x − m) (the cross-entropy's rows need both) */    \
    INLINE T softmax_row_##SUF(const T *xr, T *o, int64_t c, T *m_out)                                     \
    {                                                                                                             \
        T m, s;                                                                                                   \
        LANE_MAX(T, c, xr[j], m);                                                                                 \
        LANE_SUM(T, c, o[j] = EXP(xr[j] - m), s); /* the sum in lanes: the same bits on every clone */            \
        T inv = (T)1 / s;                                                                                         \
        _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] *= inv;                                          \
        *m_out = m;                                                                                               \
        return s;                                                                                                 \
    }                                                                                                             \
    API CLONES void softmax_fwd_##SUF(const T *x, T *out, int64_t rows, int64_t c)                               \
    {                                                                                                             \
        T m;                                                                                                      \
        for (int64_t i = 0; i < rows; i++) softmax_row_##SUF(x + i * c, out + i * c, c, &m);                      \
    }                                                                                                             \
    API CLONES void softmax_bwd_##SUF(const T *dout, const T *p, T *dx, int64_t rows, int64_t c)                 \
    {                                                                                                             \
        for (int64_t i = 0; i < rows; i++) {                                                                      \
            const T *d = dout + i * c, *pr = p + i * c;                                                           \
            T *o = dx + i * c;                                                                                    \
            T s;                                                                                                  \
            LANE_SUM(T, c, d[j] * pr[j], s);                                                                      \
            _Pragma("omp simd") for (int64_t j = 0; j < c; j++) o[j] = pr[j] * (d[j] - s);                        \
        }                                                                                                         \
    }

SOFTMAX(float, f32, exp32)
SOFTMAX(double, f64, exp)

/* The rows of the fused softmax-cross-entropy (tinytensor/kernels/softmax.py): for row r with target t_r,
 * p = softmax(x_r) into probs and loss_r = log Σ_j e^(x_rj − m) − (x_{r,t_r} − m), m the row maximum. */
#define CE_ROWS(T, SUF, LOG)                                                                                      \
    API CLONES void cross_entropy_rows_##SUF(const T *x, const int64_t *targets, T *probs, T *losses,            \
                                             int64_t rows, int64_t c)                                             \
    {                                                                                                             \
        for (int64_t i = 0; i < rows; i++) {                                                                      \
            const T *xr = x + i * c;                                                                              \
            T m, s = softmax_row_##SUF(xr, probs + i * c, c, &m);                                                 \
            losses[i] = LOG(s) - (xr[targets[i]] - m);                                                            \
        }                                                                                                         \
    }

CE_ROWS(float, f32, logf)
CE_ROWS(double, f64, log)

/* ---------------------------------------------------------------------------------------------- causal attention
 * The softmax of causal attention's scores (tinytensor/kernels/attention.py), with the scale and the mask fused:
 * rows of tk scores QKᵀ, row r the query i = (row0 + r) mod tq, which may attend to keys j ≤ i (torch's top-left
 * causal mask; tq ≤ tk). Forward P_ij = e^(s·S_ij − c)/Σ_{j'≤i} e^(s·S_ij' − c), c = s·S_ii (see below), P_ij = 0 for
 * j > i: the masked scores are never read, so neither the −∞ fill nor its pass exists. Backward, from dP and P:
 * dS_ij = f·P_ij·(dP_ij − Σ_{j'≤i} dP_ij' P_ij') with f the scale (times 1/(1 − p) under dropout), 0 for j > i.
 * Both may work in place (out == in). A row's loops run to `span`, its allowed length rounded up to whole vectors,
 * the keys beyond the diagonal selected out: the loops then have no scalar remainder, which on rows of 1-64 keys
 * cost more than their vector part. */
INLINE int64_t span(int64_t n, int64_t tk)
{
    int64_t nv = (n + 15) & ~(int64_t)15;
    return nv < tk ? nv : tk;
}

#define CAUSAL_SOFTMAX(T, SUF, EXP)                                                                               \
    /* e^(s·x_j − c) for the row's allowed keys (0 for the others, up to nv) into o; returns their sum */          \
    INLINE T causal_exp_##SUF(const T *x, T *o, int64_t n, int64_t nv, T sc, T c)                          \
    {                                                                                                             \
        T sum; /* computed on every lane, then selected: no scalar remainder; summed in lanes (clone-free bits) */ \
        LANE_SUM(T, nv, o[j] = (j < n ? EXP(sc * x[j] - c) : 0), sum);                                            \
        return sum;                                                                                               \
    }                                                                                                             \
    /* P_i· of one row of raw scores x (row i: n = i + 1 allowed keys of tk, loops to nv): the exponentials into buf, \
     * then o = buf / Σ (o may be x; buf may be o when x is not) */                                               \
    INLINE void causal_row_##SUF(const T *x, T *buf, T *o, int64_t n, int64_t nv, int64_t tk, T sc)               \
    {                                                                                                             \
        /* shift by the diagonal score s·x_i (always allowed, ≤ the row maximum, so the sum is ≥ 1): one pass     \
         * fewer than by the maximum; where that overflows (or meets a nan) the row is redone with the max */     \
        T sum = causal_exp_##SUF(x, buf, n, nv, sc, sc * x[n - 1]);                                               \
        if (!(sum < INFINITY)) {                                                                                  \
            T m = -INFINITY;                                                                                      \
            int nan = 0;                                                                                          \
            for (int64_t j = 0; j < n; j++) {                                                                     \
                T v = sc * x[j];                                                                                  \
                m = v > m ? v : m;                                                                                \
                nan |= v != v;                                                                                    \
            }                                                                                                     \
            sum = causal_exp_##SUF(x, buf, n, nv, sc, nan ? (T)NAN : m);                                          \
        }                                                                                                         \
        T inv = (T)1 / sum;                                                                                       \
        _Pragma("omp simd") for (int64_t j = 0; j < nv; j++) o[j] = buf[j] * inv;                                 \
        for (int64_t j = nv; j < tk; j++) o[j] = 0;                                                               \
    }                                                                                                             \
    API CLONES int causal_softmax_fwd_##SUF(const T *scores, T *p, int64_t row0, int64_t rows, int64_t tq,       \
                                            int64_t tk, double scale) /* 0, or 1 when out of memory */            \
    {                                                                                                             \
        const T sc = (T)scale;                                                                                    \
        T stack[STACK_ROW];                                                                                       \
        T *buf = tk <= STACK_ROW ? stack : (T *)malloc((size_t)tk * sizeof(T)); /* the row's exponentials: the  \
                                                        scores stay intact for a redo even when p is scores */    \
        if (!buf) return 1;                                                                                       \
        int64_t i = row0 % tq;                                                                                    \
        for (int64_t r = 0; r < rows; r++, i = i + 1 == tq ? 0 : i + 1) {                                         \
            int64_t n = i + 1, nv = span(n, tk);                                                                  \
            causal_row_##SUF(scores + r * tk, buf, p + r * tk, n, nv, tk, sc);                                    \
        }                                                                                                         \
        if (buf != stack) free(buf);                                                                              \
        return 0;                                                                                                 \
    }                                                                                                             \
    API CLONES void causal_softmax_bwd_##SUF(const T *dp, const T *p, T *ds, int64_t row0, int64_t rows,         \
                                             int64_t tq, int64_t tk, double factor)                               \
    {                                                                                                             \
        const T f = (T)factor;                                                                                    \
        for (int64_t r = 0; r < rows; r++) {                                                                      \
            const T *d = dp + r * tk, *pr = p + r * tk;                                                           \
            T *o = ds + r * tk;                                                                                   \
            int64_t nv = span((row0 + r) % tq + 1, tk); /* P is 0 beyond the diagonal: the products there are 0 */ \
            T dot;                                                                                                \
            LANE_SUM(T, nv, d[j] * pr[j], dot);                                                                   \
            _Pragma("omp simd") for (int64_t j = 0; j < nv; j++) o[j] = f * pr[j] * (d[j] - dot);                 \
            for (int64_t j = nv; j < tk; j++) o[j] = 0;                                                           \
        }                                                                                                         \
    }

CAUSAL_SOFTMAX(float, f32, exp32)
CAUSAL_SOFTMAX(double, f64, exp)

/* ---------------------------------------------------------------------------------------------- AdamW
 * One AdamW step over flat buffers (tinytensor/kernels/adamw.py, torch.optim.AdamW's order), every operation the
 * NumPy kernel's, in its order and precision, each rounded to T (ISO C: no contraction into fused multiply-adds):
 * the same bits as adamw_update, in one pass over p, g, m, v instead of ~13. decay is 1 − lr·λ (1 without decay:
 * a product by 1 is exact). */
#define ADAMW(T, SUF, SQRT)                                                                                       \
    API CLONES void adamw_##SUF(T *p, const T *g, T *m, T *v, int64_t n, double decay, double one_minus_b1,     \
                                double b2, double one_minus_b2, double bc2_sqrt, double eps, double step_size)    \
    {                                                                                                             \
        const T dk = (T)decay, a1 = (T)one_minus_b1, bb2 = (T)b2, a2 = (T)one_minus_b2, bc = (T)bc2_sqrt;         \
        const T e = (T)eps, st = (T)step_size;                                                                    \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                                     \
            T pi = p[i] * dk, gi = g[i];                                                                          \
            T t = gi - m[i];                                                                                      \
            t *= a1;                                                                                              \
            T mi = m[i] + t; /* m ← m + (1−β₁)(g − m) */                                                          \
            T vi = v[i] * bb2;                                                                                    \
            t = gi * gi;                                                                                          \
            t *= a2;                                                                                              \
            vi += t; /* v ← β₂v + (1−β₂)g² */                                                                     \
            t = SQRT(vi);                                                                                         \
            t /= bc;                                                                                              \
            t += e;                                                                                               \
            t = mi / t;                                                                                           \
            t *= st;                                                                                              \
            p[i] = pi - t; /* p ← p − (lr/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε) */                                         \
            m[i] = mi;                                                                                            \
            v[i] = vi;                                                                                            \
        }                                                                                                         \
    }

ADAMW(float, f32, sqrtf)
ADAMW(double, f64, sqrt)

/* ---------------------------------------------------------------------------------------------- GELU
 * tanh form, u = √(2/π)(x + k x³): out = ½x(1 + tanh u) = x·σ(2u), σ the logistic function (½(1 + tanh u) = σ(2u)
 * exactly: no cancellation where tanh u is near −1). With e = e^(−2u), σ = 1/(1 + e) and σ(1 − σ) = e·σ², so
 * d out/dx = σ + 2x·e·σ²·u′, u′ = √(2/π)(1 + 3k x²), again without 1 − σ. Backward recomputes from x.
 * exact form: out = x·Φ(x); d out/dx = Φ(x) + x·φ(x), both in the forward pass and kept, so backward is a
 * product. float32 takes Φ = σ(2 g(x)) with g ≈ artanh(erf(x/√2)) the odd polynomial of tinytensor/kernels/gelu.py
 * (G there, good to 3e-8 absolute) and φ from the same exponential (gelu_erf_parts32); float64 Φ = ½ erfc(−x/√2)
 * and φ = e^(−x²/2)/√(2π). */
static const float G32[7] = {7.978849414619265e-01f, 3.633308456630292e-02f, -3.2594966124795176e-05f,
                             -5.530619813069531e-05f, 3.96474531288017e-06f, -1.3226341755330495e-07f,
                             1.7561730958348676e-09f};

/* Φ(x) ≈ σ(2g), g = x·Σ G_k x^(2k), with the factors the derivative reuses: e = e^(−2g) and g′ = Σ (2k+1)G_k x^(2k).
 * d/dx σ(2g) = 2g′·σ(1 − σ) = 2g′·e·σ², one exponential for Φ and φ together: the derivative of the fitted Φ is
 * within 1.9e-7 of φ(x) and Φ(x) + x·φ(x) within 4.5e-7 of its exact value (float64 sweep of [−12, 12]; 5.9e-7
 * computed in float32, tests/tinytensor/test_native.py), ~5 float32 ulp of 1, where a second exponential for φ
 * cost 20% of the pass. */
INLINE float gelu_erf_parts32(float x, float *dphi)
{
    float w = x * x;
    float p = fmaf(G32[6], w, G32[5]); /* Horner in w = x², written out so every lane runs the same code */
    p = fmaf(p, w, G32[4]);
    p = fmaf(p, w, G32[3]);
    p = fmaf(p, w, G32[2]);
    p = fmaf(p, w, G32[1]);
    p = fmaf(p, w, G32[0]);
    float q = fmaf(13.0f * G32[6], w, 11.0f * G32[5]); /* g′ = Σ (2k+1) G_k w^k */
    q = fmaf(q, w, 9.0f * G32[4]);
    q = fmaf(q, w, 7.0f * G32[3]);
    q = fmaf(q, w, 5.0f * G32[2]);
    q = fmaf(q, w, 3.0f * G32[1]);
    q = fmaf(q, w, G32[0]);
    float es, s = sigmoid_neg32(-2.0f * x * p, &es);
    *dphi = 2.0f * q * es * s;
    return s;
}

API CLONES void gelu_tanh_fwd_f32(const float *x, float *out, int64_t n)
{
    const float c = (float)SQRT_2_OVER_PI, ck = (float)(SQRT_2_OVER_PI * GELU_K);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float u = xi * fmaf(ck * xi, xi, c);
        float es;
        out[i] = xi * sigmoid_neg32(-2.0f * u, &es);
    }
}

API CLONES void gelu_tanh_bwd_f32(const float *dout, const float *x, float *dx, int64_t n)
{
    const float c = (float)SQRT_2_OVER_PI, ck = (float)(SQRT_2_OVER_PI * GELU_K);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float u = xi * fmaf(ck * xi, xi, c);
        float es, s = sigmoid_neg32(-2.0f * u, &es);
        float du = fmaf(3.0f * ck * xi, xi, c);
        dx[i] = dout[i] * (s + 2.0f * xi * es * s * du);
    }
}

/* deriv may be NULL (no gradient will be asked for): then only the output is written */
API CLONES void gelu_erf_fwd_f32(const float *x, float *out, float *deriv, int64_t n)
{
    if (deriv) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float xi = x[i], dphi, cdf = gelu_erf_parts32(xi, &dphi);
            out[i] = xi * cdf;
            deriv[i] = fmaf(xi, dphi, cdf);
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float xi = x[i], dphi;
            out[i] = xi * gelu_erf_parts32(xi, &dphi);
        }
    }
}

/* float64: torch's own formulas (½x(1 + tanh u); x·½ erfc(−x/√2)) through the C library */
API void gelu_tanh_fwd_f64(const double *x, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], t = tanh(SQRT_2_OVER_PI * (xi + GELU_K * xi * xi * xi));
        out[i] = 0.5 * xi * (1.0 + t);
    }
}

API void gelu_tanh_bwd_f64(const double *dout, const double *x, double *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], t = tanh(SQRT_2_OVER_PI * (xi + GELU_K * xi * xi * xi));
        double du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_K * xi * xi);
        dx[i] = dout[i] * (0.5 * (1.0 + t) + 0.5 * xi * (1.0 - t * t) * du);
    }
}

API void gelu_erf_fwd_f64(const double *x, double *out, double *deriv, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], cdf = 0.5 * erfc(-xi * 0.7071067811865476);
        out[i] = xi * cdf;
        if (deriv) deriv[i] = cdf + xi * INV_SQRT_2PI * exp(-0.5 * xi * xi);
    }
}

/* dx = dout ⊙ deriv: the backward of both dtypes' exact GELU */
#define GELU_ERF_BWD(T, SUF)                                                                                      \
    API CLONES void gelu_erf_bwd_##SUF(const T *dout, const T *deriv, T *dx, int64_t n)                          \
    {                                                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dx[i] = dout[i] * deriv[i];                           \
    }

GELU_ERF_BWD(float, f32)
GELU_ERF_BWD(double, f64)

/* ---------------------------------------------------------------------------------------------- range calls
 * Every kernel above as one signature, f(a, d, lo, hi): its pointer and integer arguments in a, its float ones in
 * d, working on units [lo, hi) (rows, blocks of rows or elements, as tinytensor/kernels/native.py splits them), so
 * that the pool below can hand any of them a range. Returns 0, or 1 where the kernel reports a failure. */
typedef int (*range_fn)(const int64_t *a, const double *d, int64_t lo, int64_t hi);
#define ARG(T, i) ((T)(intptr_t)a[i])

#define RANGE_CALLS(T, SUF)                                                                                       \
    API int layer_norm_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)               \
    {                                                                                                             \
        int64_t c = a[6]; /* x, w, b, out, mean, rstd, c; eps */                                                  \
        layer_norm_fwd_##SUF(ARG(const T *, 0) + lo * c, ARG(const T *, 1), ARG(const T *, 2),                    \
                             ARG(T *, 3) + lo * c, ARG(T *, 4) + lo, ARG(T *, 5) + lo, hi - lo, c, d[0]);         \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int layer_norm_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)               \
    {                                                                                                             \
        (void)d; /* dout, x, w, mean, rstd, dx, part, rows, c, block; units are blocks of rows */                  \
        int64_t rows = a[7], block = a[9], r1 = hi * block < rows ? hi * block : rows;                            \
        layer_norm_bwd_##SUF(ARG(const T *, 0), ARG(const T *, 1), ARG(const T *, 2), ARG(const T *, 3),         \
                             ARG(const T *, 4), ARG(T *, 5), ARG(T *, 6), lo * block, r1, a[8], block);           \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int softmax_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                  \
    {                                                                                                             \
        (void)d; /* x, out, c */                                                                                  \
        softmax_fwd_##SUF(ARG(const T *, 0) + lo * a[2], ARG(T *, 1) + lo * a[2], hi - lo, a[2]);                 \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int softmax_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                  \
    {                                                                                                             \
        (void)d; /* dout, p, dx, c */                                                                             \
        int64_t c = a[3];                                                                                         \
        softmax_bwd_##SUF(ARG(const T *, 0) + lo * c, ARG(const T *, 1) + lo * c, ARG(T *, 2) + lo * c, hi - lo, \
                          c);                                                                                     \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int cross_entropy_rows_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)           \
    {                                                                                                             \
        (void)d; /* logits, targets, probs, losses, c */                                                          \
        int64_t c = a[4];                                                                                         \
        cross_entropy_rows_##SUF(ARG(const T *, 0) + lo * c, ARG(const int64_t *, 1) + lo, ARG(T *, 2) + lo * c, \
                                 ARG(T *, 3) + lo, hi - lo, c);                                                   \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int causal_softmax_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)           \
    {                                                                                                             \
        int64_t tq = a[2], tk = a[3]; /* scores, p, tq, tk; scale */                                              \
        return causal_softmax_fwd_##SUF(ARG(const T *, 0) + lo * tk, ARG(T *, 1) + lo * tk, lo, hi - lo, tq, tk, \
                                        d[0]);                                                                    \
    }                                                                                                             \
    API int causal_softmax_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)           \
    {                                                                                                             \
        int64_t tq = a[3], tk = a[4]; /* dp, p, ds, tq, tk; factor */                                             \
        causal_softmax_bwd_##SUF(ARG(const T *, 0) + lo * tk, ARG(const T *, 1) + lo * tk, ARG(T *, 2) + lo * tk,\
                                 lo, hi - lo, tq, tk, d[0]);                                                      \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int adamw_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                        \
    {                                                                                                             \
        adamw_##SUF(ARG(T *, 0) + lo, ARG(const T *, 1) + lo, ARG(T *, 2) + lo, ARG(T *, 3) + lo, hi - lo, d[0],  \
                    d[1], d[2], d[3], d[4], d[5], d[6]);                                                          \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int gelu_tanh_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                \
    {                                                                                                             \
        (void)d;                                                                                                  \
        gelu_tanh_fwd_##SUF(ARG(const T *, 0) + lo, ARG(T *, 1) + lo, hi - lo);                                   \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int gelu_tanh_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                \
    {                                                                                                             \
        (void)d;                                                                                                  \
        gelu_tanh_bwd_##SUF(ARG(const T *, 0) + lo, ARG(const T *, 1) + lo, ARG(T *, 2) + lo, hi - lo);           \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int gelu_erf_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                 \
    {                                                                                                             \
        (void)d; /* the derivative's pointer may be 0: then only the output is written */                          \
        T *deriv = ARG(T *, 2);                                                                                   \
        gelu_erf_fwd_##SUF(ARG(const T *, 0) + lo, ARG(T *, 1) + lo, deriv ? deriv + lo : deriv, hi - lo);        \
        return 0;                                                                                                 \
    }                                                                                                             \
    API int gelu_erf_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)                 \
    {                                                                                                             \
        (void)d;                                                                                                  \
        gelu_erf_bwd_##SUF(ARG(const T *, 0) + lo, ARG(const T *, 1) + lo, ARG(T *, 2) + lo, hi - lo);            \
        return 0;                                                                                                 \
    }

RANGE_CALLS(float, f32)
RANGE_CALLS(double, f64)

/* ---------------------------------------------------------------------------------------------- fused attention
 * Causal attention whole, for small heads (tinytensor/kernels/attention.py has the equations): per (batch, head),
 * with s the scale, c = 1/(1 − p) and D the dropout keep-mask (without dropout c·D = 1), query i seeing keys j ≤ i,
 *     forward   S_i· = q_i Kᵀ,  P_i· = softmax(s·S_i·) (causal_row),  o_i = Σ_j c·D_ij P_ij v_j
 *     backward  dP_ij = c·D_ij (do_i · v_j),  dS_ij = s·P_ij (dP_ij − Σ_j' dP_ij' P_ij'),
 *               dq_i = Σ_j dS_ij k_j,  dk_j = Σ_{i≥j} dS_ij q_i,  dv_j = Σ_{i≥j} c·D_ij P_ij do_i
 * in one call over every head instead of six batched BLAS products and two softmax passes. Why: at small heads
 * (the shakespeare-char recipe's T 64, E 32) NumPy runs one small GEMM per head, on strided operands, at 32-82
 * GFLOP/s with ~2.5 µs of overhead per call (benchmarks/NOTES.md, eighth stop). Here each product runs in register
 * tiles of MR x NR (tile), its operands in L1 (K and V transposed once per key head, so that S and dP are products
 * with row-major operands too), and the masked half is never computed. The operands are read in place at any row
 * strides (the model's heads are views of its (b, t, h, hd) projections). Heads are independent and each one is
 * summed in a fixed order: the bits do not depend on the threads. */
/* operand i of head (b, h) and its row stride, from the (b, h, t) strides of stride triple j */
#define AT_(T, i, j, h) ARG(T *, i) + b * s[3 * (j)] + (h) * s[3 * (j) + 1], s[3 * (j) + 2]
#define MR 6                      /* the tiles' rows */
#define NR(T) ((int)(64 / sizeof(T))) /* and columns: 16 float32, 8 float64 */
/* n rounded up to whole tiles of nr columns, at most lim (the callers' lim is itself whole tiles) */
INLINE int64_t tiles(int64_t n, int64_t lim, int64_t nr)
{
    int64_t up = (n + nr - 1) / nr * nr;
    return up < lim ? up : lim;
}
#define CAUSAL_ATTENTION(T, SUF, FMA)                                                                             \
    /* one tile of C = A·B, MR rows by NR columns (mr ≤ MR rows stored), its sums held in registers over the kk   \
     * products: A's element (i, k) at a[i·ars + k·aks], B's row k at b + k·ldb */                                \
    INLINE void tile_##SUF(T *c, int64_t ldc, const T *a, int64_t ars, int64_t aks, const T *b, int64_t ldb,      \
                           int64_t mr, int64_t kk, int add)                                                       \
    {                                                                                                             \
        T acc[MR][NR(T)];                                                                                         \
        const T *ar[MR];                                                                                          \
        for (int r = 0; r < MR; r++) {                                                                            \
            ar[r] = a + (r < mr ? r : 0) * ars; /* rows past mr repeat row 0, unstored */                         \
            _Pragma("omp simd") for (int j = 0; j < NR(T); j++) acc[r][j] = 0;                                    \
        }                                                                                                         \
        for (int64_t k = 0; k < kk; k++) {                                                                        \
            const T *bk = b + k * ldb;                                                                            \
            for (int r = 0; r < MR; r++) {                                                                        \
                const T x = ar[r][k * aks];                                                                       \
                _Pragma("omp simd") for (int j = 0; j < NR(T); j++) acc[r][j] = FMA(x, bk[j], acc[r][j]);         \
            }                                                                                                     \
        }                                                                                                         \
        for (int64_t r = 0; r < mr; r++) {                                                                        \
            _Pragma("omp simd") for (int j = 0; j < NR(T); j++)                                                   \
                c[r * ldc + j] = add ? c[r * ldc + j] + acc[r][j] : acc[r][j];                                    \
        }                                                                                                         \
    }                                                                                                             \
    /* the last nr < NR columns of a tile row by row, each element the same FMA chain as in tile */               \
    INLINE void tile_edge_##SUF(T *c, int64_t ldc, const T *a, int64_t ars, int64_t aks, const T *b, int64_t ldb, \
                                int64_t mr, int64_t nr, int64_t kk, int add)                                      \
    {                                                                                                             \
        for (int64_t r = 0; r < mr; r++) {                                                                        \
            T acc[NR(T)] = {0};                                                                                   \
            for (int64_t k = 0; k < kk; k++) {                                                                    \
                const T x = a[r * ars + k * aks], *bk = b + k * ldb;                                              \
                for (int64_t j = 0; j < nr; j++) acc[j] = FMA(x, bk[j], acc[j]);                                  \
            }                                                                                                     \
            for (int64_t j = 0; j < nr; j++) c[r * ldc + j] = add ? c[r * ldc + j] + acc[j] : acc[j];             \
        }                                                                                                         \
    }                                                                                                             \
    /* C (m × n, rows at ldc) = A (m × kk) · B (kk × n), tile by tile; every element one FMA chain over k = 0..kk−1 \
     * in order, so the bits do not depend on the tiling (nor on the clone) */                                    \
    INLINE void gemm_##SUF(T *c, int64_t ldc, const T *a, int64_t ars, int64_t aks, const T *b, int64_t ldb, int64_t m, \
                           int64_t n, int64_t kk, int add)                                                        \
    {                                                                                                             \
        for (int64_t i = 0; i < m; i += MR) {                                                                     \
            int64_t mr = m - i < MR ? m - i : MR;                                                                 \
            int64_t j = 0;                                                                                        \
            for (; j + NR(T) <= n; j += NR(T))                                                                    \
                tile_##SUF(c + i * ldc + j, ldc, a + i * ars, ars, aks, b + j, ldb, mr, kk, add);                 \
            if (j < n) tile_edge_##SUF(c + i * ldc + j, ldc, a + i * ars, ars, aks, b + j, ldb, mr, n - j, kk, add); \
        }                                                                                                         \
    }                                                                                                             \
    /* xT[e·lt + j] = x[j·ld + e] for the nk keys any query sees, 0 up to lt (tk rounded up to whole tiles): the rows \
     * of S and dP are then products with xT in whole tiles only */                                               \
    INLINE void keys_transposed_##SUF(const T *x, int64_t ld, T *xT, int64_t nk, int64_t lt, int64_t e_dim)       \
    {                                                                                                             \
        for (int64_t j = 0; j < nk; j++) /* x's rows read in order: they are strided, xT is in L1 */              \
            for (int64_t e = 0; e < e_dim; e++) xT[e * lt + j] = x[j * ld + e];                                   \
        for (int64_t e = 0; e < e_dim; e++)                                                                       \
            for (int64_t j = nk; j < lt; j++) xT[e * lt + j] = 0;                                                 \
    }                                                                                                             \
    /* one head's forward: P (tq, tk) contiguous, rows of o at stride ot; kT (e_dim, lt) its key head's transpose, \
     * sblk (MR, lt) and wblk (MR, tk) scratch. Queries in blocks of MR rows: block i0 needs the keys j < i0 + mr */ \
    INLINE void attn_fwd_head_##SUF(const T *q, int64_t qt, const T *k, int64_t kt, const T *v, int64_t vt, T *o, \
                                    int64_t ot, T *p, const uint8_t *keep, int64_t tq, int64_t tk, int64_t e_dim, \
                                    int64_t ev, T sc, T c, T *kT, T *sblk, T *wblk, int64_t lt)                   \
    {                                                                                                             \
        for (int64_t i0 = 0; i0 < tq; i0 += MR) {                                                                 \
            int64_t mr = tq - i0 < MR ? tq - i0 : MR, nk = i0 + mr;                                               \
            int64_t nc = tiles(span(nk, tk), lt, NR(T)); /* every column a row of the block reads */              \
            gemm_##SUF(sblk, lt, q + i0 * qt, qt, 1, kT, lt, mr, nc, e_dim, 0); /* S = Q Kᵀ, unscaled */          \
            for (int64_t r = 0; r < mr; r++) {                                                                    \
                int64_t n = i0 + r + 1;                                                                           \
                T *pr = p + (i0 + r) * tk;                                                                        \
                causal_row_##SUF(sblk + r * lt, pr, pr, n, span(n, tk), tk, sc);                                  \
                if (keep) { /* P̃ = c·D ⊙ P over the block's keys (0 past the diagonal) */                        \
                    const uint8_t *dr = keep + (i0 + r) * tk;                                                     \
                    for (int64_t j = 0; j < nk; j++) wblk[r * tk + j] = c * (T)dr[j] * pr[j];                     \
                }                                                                                                 \
            }                                                                                                     \
            const T *w = keep ? wblk : p + i0 * tk;                                                               \
            gemm_##SUF(o + i0 * ot, ot, w, tk, 1, v, vt, mr, ev, nk, 0); /* O = P̃ V */                           \
        }                                                                                                         \
    }                                                                                                             \
    /* one head's backward from dO (rows at stride dot) and the saved P: dq, dk, dv rows at their strides (dk, dv \
     * added to with add: the heads of a GQA group); vT (ev, lt) its key head's V transposed; ds and pw (tq, tk), \
     * dblk (MR, lt) scratch */                                                                                   \
    INLINE void attn_bwd_head_##SUF(const T *dout, int64_t dot, const T *q, int64_t qt, const T *k, int64_t kt,   \
                                    const T *v, int64_t vt, const T *p, const uint8_t *keep, T *dq, int64_t dqt,  \
                                    T *dk, int64_t dkt, T *dv, int64_t dvt, int64_t tq, int64_t tk, int64_t e_dim, \
                                    int64_t ev, T sc, T c, int add, T *vT, T *ds, T *pw, T *dblk, int64_t lt)     \
    {                                                                                                             \
        for (int64_t i0 = 0; i0 < tq; i0 += MR) {                                                                 \
            int64_t mr = tq - i0 < MR ? tq - i0 : MR, nk = i0 + mr;                                               \
            int64_t nc = tiles(span(nk, tk), lt, NR(T)); /* every column a row of the block reads */              \
            gemm_##SUF(dblk, lt, dout + i0 * dot, dot, 1, vT, lt, mr, nc, ev, 0); /* dP̃ = dO Vᵀ */               \
            for (int64_t r = 0; r < mr; r++) {                                                                    \
                int64_t i = i0 + r, n = i + 1, nv = span(n, tk);                                                  \
                const T *pr = p + i * tk;                                                                         \
                T *dp = dblk + r * lt, *dsr = ds + i * tk, dotp;                                                  \
                if (keep) { /* dP = c·D ⊙ dP̃; P̃ = c·D ⊙ P for dV */                                             \
                    const uint8_t *dr = keep + i * tk;                                                            \
                    for (int64_t j = 0; j < n; j++) {                                                             \
                        T f = c * (T)dr[j];                                                                       \
                        dp[j] *= f;                                                                               \
                        pw[i * tk + j] = f * pr[j];                                                               \
                    }                                                                                             \
                    for (int64_t j = n; j < tk; j++) pw[i * tk + j] = 0;                                          \
                }                                                                                                 \
                LANE_SUM(T, nv, dp[j] * pr[j], dotp); /* P is 0 past the diagonal (saved so) */                   \
                _Pragma("omp simd") for (int64_t j = 0; j < nv; j++) dsr[j] = sc * pr[j] * (dp[j] - dotp);        \
                for (int64_t j = nv; j < tk; j++) dsr[j] = 0;                                                     \
            }                                                                                                     \
            gemm_##SUF(dq + i0 * dqt, dqt, ds + i0 * tk, tk, 1, k, kt, mr, e_dim, nk, 0); /* dQ = dS K */         \
        }                                                                                                         \
        const T *w = keep ? pw : p;                                                                               \
        for (int64_t j0 = 0; j0 < tq; j0 += MR) { /* keys j0.. are seen by the queries i ≥ j0 */                  \
            int64_t mr = tq - j0 < MR ? tq - j0 : MR, m = tq - j0;                                                \
            /* dK += dSᵀ Q and dV += P̃ᵀ dO: the left operands are columns of dS and P̃ (row stride 1, k stride tk) */ \
            gemm_##SUF(dk + j0 * dkt, dkt, ds + j0 * tk + j0, 1, tk, q + j0 * qt, qt, mr, e_dim, m, add);         \
            gemm_##SUF(dv + j0 * dvt, dvt, w + j0 * tk + j0, 1, tk, dout + j0 * dot, dot, mr, ev, m, add);        \
        }                                                                                                         \
        for (int64_t j = add ? tk : tq; j < tk; j++) { /* keys after the last query get no gradient */            \
            for (int64_t e = 0; e < e_dim; e++) dk[j * dkt + e] = 0;                                              \
            for (int64_t e = 0; e < ev; e++) dv[j * dvt + e] = 0;                                                 \
        }                                                                                                         \
    }                                                                                                             \
    /* query heads [lo, hi): u = b·H + h, operands at b·s_b + h·s_h (strides in elements, a's layout in native.py); \
     * K and V of key head h / g (g query heads per key head, 1 without GQA) */                                   \
    API CLONES int causal_attention_fwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)    \
    {                                                                                                             \
        int64_t tq = a[6], tk = a[7], e_dim = a[8], ev = a[9], nh = a[10], g = a[23];                             \
        const int64_t *s = a + 11; /* (b, h, t) strides of q, k, v, o */                                          \
        int64_t lt = (tk + NR(T) - 1) / NR(T) * NR(T), done = -1; /* tk in whole tiles: the buffers' row length */ \
        T *kT = (T *)malloc((size_t)((e_dim + MR) * lt + MR * tk) * sizeof(T));                                   \
        if (!kT) return 1;                                                                                        \
        for (int64_t u = lo; u < hi; u++) {                                                                       \
            int64_t b = u / nh, h = u % nh, hk = h / g;                                                           \
            if (b * nh + hk != done) { /* a new key head: its K transposed (a GQA group's heads share it) */      \
                keys_transposed_##SUF(ARG(const T *, 1) + b * s[3] + hk * s[4], s[5], kT, tq, lt, e_dim);         \
                done = b * nh + hk;                                                                               \
            }                                                                                                     \
            const uint8_t *keep = ARG(const uint8_t *, 5);                                                        \
            attn_fwd_head_##SUF(AT_(T, 0, 0, h), AT_(T, 1, 1, hk), AT_(T, 2, 2, hk), AT_(T, 3, 3, h),             \
                                ARG(T *, 4) + u * tq * tk, keep ? keep + u * tq * tk : keep, tq, tk, e_dim, ev, (T)d[0], \
                                (T)d[1], kT, kT + e_dim * lt, kT + (e_dim + MR) * lt, lt);                        \
        }                                                                                                         \
        free(kT);                                                                                                 \
        return 0;                                                                                                 \
    }                                                                                                             \
    /* key heads [lo, hi): u = b·H_kv + hk; each one's g query heads in turn, their dK and dV summed in that order */ \
    API CLONES int causal_attention_bwd_range_##SUF(const int64_t *a, const double *d, int64_t lo, int64_t hi)    \
    {                                                                                                             \
        int64_t tq = a[9], tk = a[10], e_dim = a[11], ev = a[12], nh = a[13], g = a[35], nkv = nh / g;            \
        const int64_t *s = a + 14; /* (b, h, t) strides of dout, q, k, v, dq, dk, dv */                           \
        const uint8_t *keep = ARG(const uint8_t *, 5);                                                            \
        int64_t lt = (tk + NR(T) - 1) / NR(T) * NR(T); /* tk in whole tiles: the buffers' row length */           \
        T *vT = (T *)malloc((size_t)((ev + MR) * lt + (keep ? 2 : 1) * tq * tk) * sizeof(T));                     \
        if (!vT) return 1;                                                                                        \
        T *dblk = vT + ev * lt, *ds = dblk + MR * lt, *pw = ds + tq * tk;                                         \
        for (int64_t u = lo; u < hi; u++) {                                                                       \
            int64_t b = u / nkv, hk = u % nkv;                                                                    \
            keys_transposed_##SUF(ARG(const T *, 3) + b * s[9] + hk * s[10], s[11], vT, tq, lt, ev); /* once per group */ \
            for (int64_t r = 0; r < g; r++) {                                                                     \
                int64_t h = hk * g + r, uq = b * nh + h;                                                          \
                attn_bwd_head_##SUF(AT_(T, 0, 0, h), AT_(T, 1, 1, h), AT_(T, 2, 2, hk), AT_(T, 3, 3, hk),         \
                                    ARG(const T *, 4) + uq * tq * tk, keep ? keep + uq * tq * tk : keep,          \
                                    AT_(T, 6, 4, h), AT_(T, 7, 5, hk), AT_(T, 8, 6, hk), tq, tk, e_dim, ev, (T)d[0], \
                                    (T)d[1], r > 0, vT, ds, pw, dblk, lt);                                        \
            }                                                                                                     \
        }                                                                                                         \
        free(vT);                                                                                                 \
        return 0;                                                                                                 \
    }

CAUSAL_ATTENTION(float, f32, fmaf)
CAUSAL_ATTENTION(double, f64, fma)

API int exp_range_f32(const int64_t *a, const double *d, int64_t lo, int64_t hi)
{
    (void)d;
    exp_f32(ARG(const float *, 0) + lo, ARG(float *, 1) + lo, hi - lo);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- the pool
 * The workers of tinytensor/kernels/threads.py wait here, in C and without the GIL, and run a kernel's range the
 * moment it is posted: the caller's pool_run hands each worker a range, runs the first itself and spins until all
 * are done, with no Python and no lock between. A worker spins (pause) for spin_s after its last task before it
 * sleeps on a condition variable; a wake-up from that sleep costs ~30-50 µs on the 2-core VM, the spin ~0.1, which
 * is what decides whether a 0.1 ms kernel is worth splitting (LayerNorm's forward at (2,256,768): 116 µs on one
 * thread, 49 on two spinning ones, no faster on two through a lock). A task of kind PY_TASK sends the worker back
 * to Python (pool_wait returns 1) to run a Python range, e.g. a NumPy product; pool_finish marks it done. */
#if !defined(_WIN32)
#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define POOL_MAX 16
enum { NO_TASK, C_TASK, PY_TASK, STOP_TASK };

typedef struct {
    int64_t posted, finished; /* task counters: the caller bumps posted, the worker sets finished to it */
    int kind, sleeping, status, park;
    range_fn fn;
    const int64_t *a;
    const double *d;
    int64_t lo, hi;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char pad[64]; /* one slot per cache line pair: the workers' spins do not share a line */
} pool_slot;

static pool_slot slots[POOL_MAX];

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Fresh slots (at load and in a forked child, where no worker thread exists and a lock may be left held) */
API void pool_reset(void)
{
    for (int w = 0; w < POOL_MAX; w++) {
        memset(&slots[w], 0, sizeof(slots[w]));
        pthread_mutex_init(&slots[w].mu, NULL);
        pthread_cond_init(&slots[w].cv, NULL);
    }
}

API int pool_max(void) { return POOL_MAX; }

static void post(pool_slot *s, int kind, range_fn fn, const int64_t *a, const double *d, int64_t lo, int64_t hi)
{
    s->kind = kind, s->fn = fn, s->a = a, s->d = d, s->lo = lo, s->hi = hi;
    __atomic_fetch_add(&s->posted, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->sleeping, __ATOMIC_SEQ_CST)) { /* seq_cst on both sides: either the worker sees the
                                                               new task before it sleeps, or this sees it asleep */
        pthread_mutex_lock(&s->mu);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

/* A worker's wait (called by its thread with the GIL released): runs C tasks as they come; returns 1 for a Python
 * task (then pool_finish), 0 when told to stop. It spins spin_s after each C task, and before the first one only
 * where spin_first says so (after a Python range it sleeps at once: see threads.py). */
API int pool_wait(int w, double spin_s, int spin_first)
{
    pool_slot *s = &slots[w];
    int64_t seen = __atomic_load_n(&s->finished, __ATOMIC_ACQUIRE);
    double limit = spin_first ? spin_s : 0.0;
    for (;;) {
        double t0 = 0;
        for (int64_t i = 0; __atomic_load_n(&s->posted, __ATOMIC_ACQUIRE) == seen; i++) {
            CPU_RELAX();
            if ((i & 31) == 0) {
                sched_yield(); /* another thread made runnable on this core (BLAS's own, say) runs now */
                double t = now_s();
                if (i == 0) t0 = t;
                else if (t - t0 > limit || __atomic_exchange_n(&s->park, 0, __ATOMIC_ACQ_REL)) {
                    pthread_mutex_lock(&s->mu);
                    __atomic_store_n(&s->sleeping, 1, __ATOMIC_SEQ_CST);
                    while (__atomic_load_n(&s->posted, __ATOMIC_SEQ_CST) == seen) pthread_cond_wait(&s->cv, &s->mu);
                    __atomic_store_n(&s->sleeping, 0, __ATOMIC_SEQ_CST);
                    pthread_mutex_unlock(&s->mu);
                }
            }
        }
        seen = __atomic_load_n(&s->posted, __ATOMIC_ACQUIRE);
        if (s->kind == PY_TASK) return 1;
        if (s->kind == STOP_TASK) {
            __atomic_store_n(&s->finished, seen, __ATOMIC_RELEASE); /* the slot's next worker starts level */
            return 0;
        }
        s->status = s->fn(s->a, s->d, s->lo, s->hi);
        __atomic_store_n(&s->finished, seen, __ATOMIC_RELEASE);
        limit = spin_s;
    }
}

API void pool_finish(int w) { __atomic_store_n(&slots[w].finished, slots[w].posted, __ATOMIC_RELEASE); }

API void pool_post(int w, int stop) { post(&slots[w], stop ? STOP_TASK : PY_TASK, NULL, NULL, NULL, 0, 0); }

/* The caller's wait for worker w's task (a Python one; pool_run waits for its own) */
API void pool_join(int w)
{
    pool_slot *s = &slots[w];
    while (__atomic_load_n(&s->finished, __ATOMIC_ACQUIRE) != __atomic_load_n(&s->posted, __ATOMIC_ACQUIRE))
        CPU_RELAX();
}

/* fn over [0, n) in k contiguous ranges on multiples of align (bounds: k + 1 cuts from the caller): range 0 on
 * this thread, range i on worker i − 1. Returns the OR of the ranges' statuses. */
API int pool_run(void *fn, const int64_t *a, const double *d, const int64_t *cuts, int k)
{
    range_fn f = (range_fn)fn;
    for (int i = 1; i < k; i++) post(&slots[i - 1], C_TASK, f, a, d, cuts[i], cuts[i + 1]);
    int status = f(a, d, cuts[0], cuts[1]);
    for (int i = 1; i < k; i++) {
        pool_join(i - 1);
        status |= slots[i - 1].status;
    }
    return status;
}

/* Send the spinning workers to sleep now, not SPIN_S from now: before BLAS's own threads run a product, which
 * would otherwise share a core with a spinning worker */
API void pool_park(void)
{
    for (int w = 0; w < POOL_MAX; w++)
        if (!__atomic_load_n(&slots[w].sleeping, __ATOMIC_ACQUIRE)) __atomic_store_n(&slots[w].park, 1, __ATOMIC_RELEASE);
}

/* Whether worker w sleeps (run_native leaves a small call inline then: waking it costs more than the split saves) */
API int pool_asleep(int w) { return __atomic_load_n(&slots[w].sleeping, __ATOMIC_SEQ_CST); }
#endif
