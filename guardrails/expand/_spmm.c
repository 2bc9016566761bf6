/*
 * Compiled loops of the propagation engine (guardrails/expand/_engine.py), with the GIL
 * released so that the engine's threads run them on separate row ranges:
 *
 *   csr_matmul  Y[lo:hi] = A[lo:hi] @ X
 *   cg_product  Q[lo:hi] = P[lo:hi] - a (A @ P)[lo:hi], with the column sums P.Q, R.Q, Q.Q
 *   cg_update   Z += alpha P, R -= alpha Q, P = R + beta P on rows lo:hi, with the column
 *               sums of |P / s|, |Z / s|, R.R and R.P
 *   power_product  Y[lo:hi] = a (A @ X)[lo:hi] + W[lo:hi], with the sums of |Y - X| and |Y|
 *   csr_scatter (diag(s) A)^T @ X from A's own rows, without a transposed copy
 *   csr_transpose  the transpose of A with each non-zero scaled by its row's factor, in
 *               one pass (a walk's operator against the edges, built once per graph)
 *
 * A is CSR (float32 data; int32 or int64 indptr and indices), the dense arrays are
 * float32, row-major with c columns (one per seed category), the sums float64.
 *
 * Why not scipy's product: for c > 1 scipy adds every non-zero's row of X into Y through
 * memory, in a loop over a run-time column count; on the 1M-node benchmark graph an
 * 8-column product cost 2.5 to 5 times a 1-column one. Here a row of Y is accumulated
 * in registers (a fixed 8-wide loop for c = 8) and the row of X that a later non-zero
 * needs is prefetched, since on a large graph the product waits on those random reads.
 * The conjugate-gradient steps then run in the same pass over the rows as the product,
 * or in one more pass, instead of a dozen numpy passes with temporaries.
 *
 * Safety: buffers come through the buffer protocol (C-contiguous, dtype checked); every
 * length is checked against the row range and every column index against the rows of
 * X, so a bad call raises instead of reading or writing out of bounds. Each row is
 * summed in the order of its non-zeros, in float32, as scipy does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../_buffers.h"

#if defined(__GNUC__) || defined(__clang__)
#define GR_PREFETCH(p) __builtin_prefetch((p), 0, 1)
#define GR_PREFETCH_W(p) __builtin_prefetch((p), 1, 1)
#else
#define GR_PREFETCH(p) ((void)0)
#define GR_PREFETCH_W(p) ((void)0)
#endif

/* Non-zeros ahead whose row of X is prefetched: GR_AHEAD for several columns, and
   GR_AHEAD_ONE for one column, where a non-zero costs a few cycles and the read must be
   issued further ahead. Without it the one-column product waited on its random reads
   of X: on the directed 1M-node benchmark graph (transposed walk operator, one thread)
   64 ahead took 0.038-0.063 s per product against 0.074-0.18 s without prefetch (16:
   0.046-0.070, 128: 0.052-0.075), which made a prepared RiskGraph's repeated call cost
   about as much as a one-call propagate. The one-column scatter (csr_scatter) prefetches
   the rows of y it will add to, as writes, the same distance ahead: 0.040 s against
   0.125 s per product there. */
#define GR_AHEAD 16
#define GR_AHEAD_ONE 64

/* On x86-64 Linux with GCC or Clang, the product loops are also compiled for AVX2 and the
   loader picks that version on CPUs that have it (an 8-column row is one AVX register);
   elsewhere (musl has no ifunc) there is one baseline build. No FMA: the rounding stays
   that of scipy (setup.py also turns off contraction into FMA on other platforms). */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && \
    (defined(__GNUC__) || defined(__clang__)) && !defined(GR_NO_CLONES)
#define GR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GR_CLONES
#endif

/* Row i of A @ X into y (c floats). Returns -1 on a column index outside X, -2 when the
   row's range of non-zeros leaves [start, end), the range validated before the GIL was
   released (indptr is read once per row here, so a concurrent write cannot push the
   loop outside indices and data). */
#define GR_DEFINE_ROW(NAME, IDX)                                                            \
    static inline int NAME(Py_ssize_t i, int64_t start, int64_t end, const IDX *indptr,       \
                           const IDX *indices, const float *data, const float *x,             \
                           uint64_t xrows, float *y, Py_ssize_t c)                            \
    {                                                                                         \
        const int64_t first = (int64_t)indptr[i], last = (int64_t)indptr[i + 1];              \
        if (first < start || last > end || last < first) return -2;                          \
        if (c == 1) {                                                                         \
            float acc = 0.0f;                                                                 \
            for (int64_t jj = first; jj < last; jj++) {                                       \
                if (jj + GR_AHEAD_ONE < end) {                                                \
                    const uint64_t f = (uint64_t)(int64_t)indices[jj + GR_AHEAD_ONE];         \
                    if (f < xrows) GR_PREFETCH(x + f);                                        \
                }                                                                             \
                const uint64_t j = (uint64_t)(int64_t)indices[jj];                            \
                if (j >= xrows) return -1;                                                    \
                acc += data[jj] * x[j];                                                       \
            }                                                                                 \
            y[0] = acc;                                                                       \
        } else if (c == 8) {                                                                  \
            float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};                  \
            for (int64_t jj = first; jj < last; jj++) {                                       \
                if (jj + GR_AHEAD < end) {                                                    \
                    const uint64_t f = (uint64_t)(int64_t)indices[jj + GR_AHEAD];             \
                    if (f < xrows) GR_PREFETCH(x + f * 8);                                    \
                }                                                                             \
                const uint64_t j = (uint64_t)(int64_t)indices[jj];                            \
                if (j >= xrows) return -1;                                                    \
                const float v = data[jj];                                                     \
                const float *xr = x + j * 8;                                                  \
                for (int k = 0; k < 8; k++) acc[k] += v * xr[k];                              \
            }                                                                                 \
            memcpy(y, acc, sizeof(acc));                                                      \
        } else {                                                                              \
            for (Py_ssize_t k = 0; k < c; k++) y[k] = 0.0f;                                   \
            for (int64_t jj = first; jj < last; jj++) {                                       \
                if (jj + GR_AHEAD < end) {                                                    \
                    const uint64_t f = (uint64_t)(int64_t)indices[jj + GR_AHEAD];             \
                    if (f < xrows) GR_PREFETCH(x + f * (uint64_t)c);                          \
                }                                                                             \
                const uint64_t j = (uint64_t)(int64_t)indices[jj];                            \
                if (j >= xrows) return -1;                                                    \
                const float v = data[jj];                                                     \
                const float *xr = x + j * (uint64_t)c;                                        \
                for (Py_ssize_t k = 0; k < c; k++) y[k] += v * xr[k];                         \
            }                                                                                 \
        }                                                                                     \
        return 0;                                                                             \
    }

GR_DEFINE_ROW(row_i32, int32_t)
GR_DEFINE_ROW(row_i64, int64_t)

/* Rows lo:hi of A @ X into y, then on each row the epilogue of `mode`:
   GR_PLAIN none; GR_CG  y = x - a y with the sums x.y, r.y, y.y (x = P, r = R);
   GR_POWER y = a y + r with the sums |y - x| and |y| (x = the last iterate, r = W). */
enum { GR_PLAIN = 0, GR_CG = 1, GR_POWER = 2 };

#define GR_DEFINE_ROWS(NAME, ROW, IDX)                                                       \
    GR_CLONES static int NAME(Py_ssize_t lo, Py_ssize_t hi, int64_t start, int64_t end,       \
                              const IDX *indptr, const IDX *indices, const float *data,       \
                              const float *x, uint64_t xrows, float *y, Py_ssize_t c,         \
                              const float *r, float a, double *sums, int mode)                \
    {                                                                                         \
        for (Py_ssize_t i = lo; i < hi; i++) {                                                \
            float *yr = y + (size_t)i * (size_t)c;                                            \
            const int rc = ROW(i, start, end, indptr, indices, data, x, xrows, yr, c);        \
            if (rc != 0) return rc;                                                           \
            if (mode == GR_POWER) {                                                           \
                const float *xr = x + (size_t)i * (size_t)c;                                  \
                const float *wr = r + (size_t)i * (size_t)c;                                  \
                for (Py_ssize_t k = 0; k < c; k++) {                                          \
                    const float yk = a * yr[k] + wr[k];                                       \
                    yr[k] = yk;                                                               \
                    sums[k] += fabs((double)yk - (double)xr[k]);                              \
                    sums[c + k] += fabs((double)yk);                                          \
                }                                                                             \
            } else if (mode == GR_CG) {                                                       \
                const float *pr = x + (size_t)i * (size_t)c;                                  \
                const float *rr = r + (size_t)i * (size_t)c;                                  \
                for (Py_ssize_t k = 0; k < c; k++) {                                          \
                    const float q = pr[k] - a * yr[k];                                        \
                    yr[k] = q;                                                                \
                    sums[k] += (double)pr[k] * (double)q;                                     \
                    sums[c + k] += (double)rr[k] * (double)q;                                 \
                    sums[2 * c + k] += (double)q * (double)q;                                 \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        return 0;                                                                             \
    }

GR_DEFINE_ROWS(rows_i32, row_i32, int32_t)
GR_DEFINE_ROWS(rows_i64, row_i64, int64_t)

static int64_t
index_at(const Py_buffer *b, int width, Py_ssize_t k)
{
    return width == 4 ? (int64_t)((const int32_t *)b->buf)[k] : ((const int64_t *)b->buf)[k];
}

/* Refuse an output buffer whose bytes overlap an input's: the loops read rows of the
   inputs after writing rows of the output, so aliasing would give wrong values. */
static int
check_apart(const Py_buffer *out, const Py_buffer *in, const char *out_name, const char *in_name)
{
    const char *o = (const char *)out->buf, *i = (const char *)in->buf;
    if (out->len > 0 && in->len > 0 && o < i + in->len && i < o + out->len) {
        PyErr_Format(PyExc_ValueError, "%s overlaps %s: pass separate arrays", out_name, in_name);
        return -1;
    }
    return 0;
}

/* Dense float32 rows: at least hi rows of c values. */
static int
check_rows(const Py_buffer *b, Py_ssize_t hi, Py_ssize_t c, const char *name)
{
    if (b->len / 4 / c < hi) {
        PyErr_Format(PyExc_ValueError, "%s has fewer than %zd rows of %zd values", name, hi, c);
        return -1;
    }
    return 0;
}

/* The index width and the range of non-zeros of rows lo:hi, once validated. */
typedef struct {
    int width;
    int64_t start, end;
} csr_rows;

/* The CSR arrays for rows lo:hi. */
static int
check_csr(const Py_buffer *bp, const Py_buffer *bi, const Py_buffer *bd, Py_ssize_t lo,
          Py_ssize_t hi, Py_ssize_t c, csr_rows *rows)
{
    const int w = (int)bp->itemsize;
    if (bi->itemsize != w) {
        PyErr_SetString(PyExc_TypeError, "indptr and indices must share a dtype");
        return -1;
    }
    /* hi < entries of indptr, written without hi + 1 (no overflow for any hi). */
    if (c < 1 || lo < 0 || hi < lo || hi >= bp->len / w) {
        PyErr_SetString(PyExc_ValueError, "row range outside indptr, or c < 1");
        return -1;
    }
    const int64_t start = index_at(bp, w, lo), end = index_at(bp, w, hi);
    if (start < 0 || end < start || bi->len / w < end || bd->len / 4 < end) {
        PyErr_SetString(PyExc_ValueError, "indptr points outside indices or data");
        return -1;
    }
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (index_at(bp, w, i + 1) < index_at(bp, w, i)) {
            PyErr_SetString(PyExc_ValueError, "indptr is not non-decreasing");
            return -1;
        }
    }
    rows->width = w;
    rows->start = start;
    rows->end = end;
    return 0;
}

static int
run_rows(const csr_rows *rows, Py_buffer *v, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t c,
         const float *r, float a, double *sums, int mode)
{
    /* v: indptr, indices, data, x, y */
    const uint64_t xrows = (uint64_t)(v[3].len / 4 / c);
    const int64_t start = rows->start, end = rows->end;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (rows->width == 4) {
        rc = rows_i32(lo, hi, start, end, (const int32_t *)v[0].buf, (const int32_t *)v[1].buf,
                      (const float *)v[2].buf, (const float *)v[3].buf, xrows, (float *)v[4].buf,
                      c, r, a, sums, mode);
    } else {
        rc = rows_i64(lo, hi, start, end, (const int64_t *)v[0].buf, (const int64_t *)v[1].buf,
                      (const float *)v[2].buf, (const float *)v[3].buf, xrows, (float *)v[4].buf,
                      c, r, a, sums, mode);
    }
    Py_END_ALLOW_THREADS
    if (rc == -1) {
        PyErr_SetString(PyExc_IndexError, "a column index is outside x (rows before it are written)");
        return -1;
    }
    if (rc != 0) {
        PyErr_SetString(PyExc_ValueError, "indptr changed during the call");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(csr_matmul_doc,
"csr_matmul(indptr, indices, data, x, y, lo, hi, c, /)\n--\n\n"
"Write rows lo:hi of A @ X into y, for A in CSR form (indptr and indices both int32 or\n"
"both int64, data float32) and X, y float32, C-contiguous, c columns (flattened or\n"
"not). Releases the GIL. Raises TypeError on a wrong dtype, ValueError on inconsistent\n"
"lengths and IndexError on a column index outside X.");

static PyObject *
csr_matmul(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[5];
    Py_buffer v[5];
    Py_ssize_t lo, hi, c;
    csr_rows rows;
    if (!PyArg_ParseTuple(args, "OOOOOnnn:csr_matmul", &o[0], &o[1], &o[2], &o[3], &o[4], &lo,
                          &hi, &c)) {
        return NULL;
    }
    static const char *const names[] = {"indptr", "indices", "data", "x", "y"};
    if (get_buffers(o, v, "iiffF", names) ||
        check_apart(&v[4], &v[3], "y", "x") ||
        check_csr(&v[0], &v[1], &v[2], lo, hi, c, &rows) ||
        check_rows(&v[4], hi, c, "y") || run_rows(&rows, v, lo, hi, c, NULL, 0.0f, NULL, GR_PLAIN)) {
        release_all(v, 5);
        return NULL;
    }
    release_all(v, 5);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cg_product_doc,
"cg_product(indptr, indices, data, p, r, q, lo, hi, c, a, sums, /)\n--\n\n"
"For rows lo:hi: q = p - a (A @ p), and add the column sums p.q, r.q and q.q to\n"
"sums[0:c], sums[c:2c] and sums[2c:3c] (float64). p, r, q: float32, c columns.");

/* The product with an epilogue (cg_product, power_product): the same arguments
   (indptr, indices, data, x, r, y, lo, hi, c, a, sums), named `names` (x, r, y) in
   errors; `nsums` blocks of c sums; the epilogue `mode`. */
static PyObject *
product_with_epilogue(PyObject *args, const char *format, const char *const names[3],
                      Py_ssize_t nsums, int mode)
{
    PyObject *o[7];
    Py_buffer v[7];
    Py_ssize_t lo, hi, c;
    float a;
    csr_rows rows;
    if (!PyArg_ParseTuple(args, format, &o[0], &o[1], &o[2], &o[3], &o[5], &o[4], &lo, &hi, &c,
                          &a, &o[6])) {
        return NULL;
    }
    /* v: indptr, indices, data, x, y, r, sums */
    const char *const bufs[] = {"indptr", "indices", "data", names[0], names[2], names[1], "sums"};
    if (get_buffers(o, v, "iiffFfD", bufs) ||
        check_apart(&v[4], &v[3], names[2], names[0]) ||
        check_apart(&v[4], &v[5], names[2], names[1]) ||
        check_csr(&v[0], &v[1], &v[2], lo, hi, c, &rows) || check_rows(&v[3], hi, c, names[0]) ||
        check_rows(&v[4], hi, c, names[2]) || check_rows(&v[5], hi, c, names[1])) {
        release_all(v, 7);
        return NULL;
    }
    if (v[6].len / 8 / nsums < c) {
        PyErr_Format(PyExc_ValueError, "sums has fewer than %zd c values", nsums);
        release_all(v, 7);
        return NULL;
    }
    if (run_rows(&rows, v, lo, hi, c, (const float *)v[5].buf, a, (double *)v[6].buf, mode)) {
        release_all(v, 7);
        return NULL;
    }
    release_all(v, 7);
    Py_RETURN_NONE;
}

/* A module function FN: product_with_epilogue with the names of its x, r, y arguments,
   NSUMS blocks of sums and the epilogue MODE (the format names FN in errors). */
#define GR_DEFINE_PRODUCT(FN, X, R, Y, NSUMS, MODE)                                          \
    static PyObject *FN(PyObject *Py_UNUSED(self), PyObject *args)                           \
    {                                                                                        \
        static const char *const names[3] = {X, R, Y};                                       \
        return product_with_epilogue(args, "OOOOOOnnnfO:" #FN, names, NSUMS, MODE);          \
    }

GR_DEFINE_PRODUCT(cg_product, "p", "r", "q", 3, GR_CG)

PyDoc_STRVAR(power_product_doc,
"power_product(indptr, indices, data, x, w, y, lo, hi, c, a, sums, /)\n--\n\n"
"For rows lo:hi: y = a (A @ x) + w, and add the column sums |y - x| and |y| to\n"
"sums[0:c] and sums[c:2c] (float64). x, w, y: float32, c columns (x is the last\n"
"iterate of a power iteration, y the next one).");

GR_DEFINE_PRODUCT(power_product, "x", "w", "y", 2, GR_POWER)

PyDoc_STRVAR(cg_update_doc,
"cg_update(p, q, r, z, inv, alpha, beta, lo, hi, c, sums, /)\n--\n\n"
"For rows lo:hi, per column k: add |p inv| to sums[k]; z += alpha[k] p; r -= alpha[k] q;\n"
"add |z inv| to sums[c + k] and r r to sums[2c + k]; p = r + beta[k] p; add r p to\n"
"sums[3c + k]. p, q, r, z: float32 with c columns; inv: float32, one per row;\n"
"alpha, beta: float32, c values; sums: float64, 4 c values.");

static PyObject *
cg_update(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[8];
    Py_buffer v[8];
    Py_ssize_t lo, hi, c;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnnO:cg_update", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &lo, &hi, &c, &o[7])) {
        return NULL;
    }
    static const char *const names[8] = {"p", "q", "r", "z", "inv", "alpha", "beta", "sums"};
    static const int writable[8] = {1, 0, 1, 1, 0, 0, 0, 1};
    if (get_buffers(o, v, "FfFFfffD", names)) return NULL;
    for (int k = 0; k < 8; k++) {
        for (int j = 0; j < 8; j++) {
            if (j != k && writable[k] && (j > k || !writable[j]) &&
                check_apart(&v[k], &v[j], names[k], names[j])) {
                release_all(v, 8);
                return NULL;
            }
        }
    }
    if (c < 1 || lo < 0 || hi < lo || check_rows(&v[0], hi, c, "p") ||
        check_rows(&v[1], hi, c, "q") || check_rows(&v[2], hi, c, "r") ||
        check_rows(&v[3], hi, c, "z") || check_rows(&v[4], hi, 1, "inv") ||
        check_rows(&v[5], 1, c, "alpha") || check_rows(&v[6], 1, c, "beta") ||
        v[7].len / 8 / 4 < c) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "bad row range, c or sums length");
        }
        release_all(v, 8);
        return NULL;
    }
    float *p = (float *)v[0].buf, *r = (float *)v[2].buf, *z = (float *)v[3].buf;
    const float *q = (const float *)v[1].buf, *inv = (const float *)v[4].buf;
    const float *alpha = (const float *)v[5].buf, *beta = (const float *)v[6].buf;
    double *sums = (double *)v[7].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = lo; i < hi; i++) {
        const size_t o0 = (size_t)i * (size_t)c;
        const float iv = inv[i];
        for (Py_ssize_t k = 0; k < c; k++) {
            const float pk = p[o0 + k];
            const float zk = z[o0 + k] + alpha[k] * pk;
            const float rk = r[o0 + k] - alpha[k] * q[o0 + k];
            sums[k] += fabs((double)(pk * iv));
            sums[c + k] += fabs((double)(zk * iv));
            sums[2 * c + k] += (double)rk * (double)rk;
            const float pn = rk + beta[k] * pk;
            sums[3 * c + k] += (double)rk * (double)pn;
            z[o0 + k] = zk;
            r[o0 + k] = rk;
            p[o0 + k] = pn;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(v, 8);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(csr_transpose_doc,
"csr_transpose(indptr, indices, data, scale, next, out_indices, out_data, /)\n--\n\n"
"Scatter A (CSR, n rows) into its transpose, scaling each non-zero by scale[row]:\n"
"for row i and non-zero (i, j, v), write i and v * scale[i] at position next[j]\n"
"(then next[j] += 1) of out_indices and out_data. next (int64, one entry per column\n"
"of A) starts as the transpose's indptr without its last entry, computed by the\n"
"caller from the column counts; rows come in order, so each transposed row is\n"
"sorted. One pass over A, with the GIL released: the transposed copy and the\n"
"normalisation of a walk in one step. Every position is checked against its\n"
"column's end (the next column's start), so inconsistent input raises ValueError.");

static PyObject *
csr_transpose(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[7];
    Py_buffer v[7];
    if (!PyArg_ParseTuple(args, "OOOOOOO:csr_transpose", &o[0], &o[1], &o[2], &o[3], &o[4],
                          &o[5], &o[6])) {
        return NULL;
    }
    static const char *const names[] = {
        "indptr", "indices", "data", "scale", "next", "out_indices", "out_data"};
    if (get_buffers(o, v, "iiffIIF", names)) return NULL;
    const int w = (int)v[0].itemsize, wo = (int)v[5].itemsize;
    const Py_ssize_t n = v[0].len / w - 1, ncols = v[4].len / 8, cap = v[5].len / wo;
    int bad = v[1].itemsize != w || v[4].itemsize != 8 || n < 0 || v[3].len / 4 < n ||
              v[6].len / 4 < cap;
    if (!bad) {
        const int64_t nnz = index_at(&v[0], w, n);
        bad = index_at(&v[0], w, 0) != 0 || nnz < 0 || v[1].len / w < nnz || v[2].len / 4 < nnz ||
              cap < nnz;
        for (Py_ssize_t i = 0; !bad && i < n; i++) {
            bad = index_at(&v[0], w, i + 1) < index_at(&v[0], w, i);
        }
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "csr_transpose: inconsistent array lengths or dtypes");
        release_all(v, 7);
        return NULL;
    }
    int rc = 0;
    int64_t *next = (int64_t *)v[4].buf;
    const float *data = (const float *)v[2].buf, *scale = (const float *)v[3].buf;
    float *odata = (float *)v[6].buf;
    /* The end of column j's range is next[j + 1] as given (cap for the last column). */
    int64_t *ends = (int64_t *)PyMem_RawMalloc((size_t)(ncols > 0 ? ncols : 1) * 8);
    if (ends == NULL) {
        release_all(v, 7);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t j = 0; j < ncols; j++) ends[j] = j + 1 < ncols ? next[j + 1] : cap;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        const int64_t first = index_at(&v[0], w, i), last = index_at(&v[0], w, i + 1);
        const float s = scale[i];
        for (int64_t jj = first; jj < last; jj++) {
            const uint64_t j = (uint64_t)index_at(&v[1], w, jj);
            if (j >= (uint64_t)ncols) { rc = -1; break; }
            const int64_t pos = next[j];
            if (pos < 0 || pos >= ends[j]) { rc = -1; break; }
            next[j] = pos + 1;
            if (wo == 4) ((int32_t *)v[5].buf)[pos] = (int32_t)i;
            else ((int64_t *)v[5].buf)[pos] = (int64_t)i;
            odata[pos] = data[jj] * s;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(ends);
    release_all(v, 7);
    if (rc != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "csr_transpose: a column index or position outside its range");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(csr_scatter_doc,
"csr_scatter(indptr, indices, data, scale, x, y, lo, hi, c, /)\n--\n\n"
"Add rows lo:hi of (diag(scale) A)^T @ X into y: for row i of A and its non-zero\n"
"(i, j, v), y[j] += v * scale[i] * x[i] (c columns). A is read in its own CSR order,\n"
"so the transpose's product needs no transposed copy; threads pass separate y\n"
"buffers (their rows of A scatter anywhere) and the caller adds them up. Releases the\n"
"GIL. ValueError on inconsistent lengths, IndexError on a column index outside y.");

static PyObject *
csr_scatter(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[6];
    Py_buffer v[6];
    Py_ssize_t lo, hi, c;
    csr_rows rows;
    if (!PyArg_ParseTuple(args, "OOOOOOnnn:csr_scatter", &o[0], &o[1], &o[2], &o[3], &o[4],
                          &o[5], &lo, &hi, &c)) {
        return NULL;
    }
    static const char *const names[] = {"indptr", "indices", "data", "scale", "x", "y"};
    if (get_buffers(o, v, "iifffF", names) ||
        check_apart(&v[5], &v[4], "y", "x") || check_csr(&v[0], &v[1], &v[2], lo, hi, c, &rows) ||
        check_rows(&v[4], hi, c, "x")) {
        release_all(v, 6);
        return NULL;
    }
    if (v[3].len / 4 < hi) {
        PyErr_SetString(PyExc_ValueError, "scale has fewer than hi entries");
        release_all(v, 6);
        return NULL;
    }
    const uint64_t yrows = (uint64_t)(v[5].len / 4 / c);
    const int w = rows.width;
    const float *data = (const float *)v[2].buf, *scale = (const float *)v[3].buf;
    const float *x = (const float *)v[4].buf;
    float *y = (float *)v[5].buf;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = lo; i < hi && rc == 0; i++) {
        const int64_t first = index_at(&v[0], w, i), last = index_at(&v[0], w, i + 1);
        if (first < rows.start || last > rows.end || last < first) { rc = -2; break; }
        const float *xi = x + (size_t)i * c;
        const float s = scale[i];
        if (c == 1) {
            const float xs = xi[0] * s;
            if (xs == 0.0f) continue;
            if (w == 4) {
                const int32_t *ind = (const int32_t *)v[1].buf;
                for (int64_t jj = first; jj < last; jj++) {
                    if (jj + GR_AHEAD_ONE < rows.end) {
                        const uint64_t f = (uint64_t)(int64_t)ind[jj + GR_AHEAD_ONE];
                        if (f < yrows) GR_PREFETCH_W(y + f);
                    }
                    const uint64_t j = (uint64_t)(int64_t)ind[jj];
                    if (j >= yrows) { rc = -1; break; }
                    y[j] += data[jj] * xs;
                }
            } else {
                const int64_t *ind = (const int64_t *)v[1].buf;
                for (int64_t jj = first; jj < last; jj++) {
                    if (jj + GR_AHEAD_ONE < rows.end) {
                        const uint64_t f = (uint64_t)ind[jj + GR_AHEAD_ONE];
                        if (f < yrows) GR_PREFETCH_W(y + f);
                    }
                    const uint64_t j = (uint64_t)ind[jj];
                    if (j >= yrows) { rc = -1; break; }
                    y[j] += data[jj] * xs;
                }
            }
        } else {
            for (int64_t jj = first; jj < last; jj++) {
                const uint64_t j = (uint64_t)index_at(&v[1], w, jj);
                if (j >= yrows) { rc = -1; break; }
                const float f = data[jj] * s;
                float *yj = y + j * (uint64_t)c;
                for (Py_ssize_t k = 0; k < c; k++) yj[k] += f * xi[k];
            }
        }
    }
    Py_END_ALLOW_THREADS
    release_all(v, 6);
    if (rc == -1) {
        PyErr_SetString(PyExc_IndexError, "a column index is outside y");
        return NULL;
    }
    if (rc != 0) {
        PyErr_SetString(PyExc_ValueError, "indptr changed during the call");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    GR_METHOD(csr_scatter),
    GR_METHOD(csr_transpose),
    GR_METHOD(csr_matmul),
    GR_METHOD(cg_product),
    GR_METHOD(cg_update),
    GR_METHOD(power_product),
    {NULL, NULL, 0, NULL},
};

GR_MODULE(_spmm, "Compiled loops of guardrails.expand's propagation engine.")
