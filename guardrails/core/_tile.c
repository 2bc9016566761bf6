/*
 * The selection step of the kernel's fused, pruned path (guardrails/core/_fused.py,
 * run_chunk_tiled) over one scored tile, in two passes instead of a dozen numpy ones,
 * with the GIL released so that the kernel's worker threads run it side by side:
 *
 *   tile_select  block maxima of the tile; each row's N largest scores so far raised by
 *                the tile's own scores; the row's thresholds (float64, and float32
 *                rounded down; guardrails.core._exact.lower: t - 2 delta when rel is 0); every finite cell of a block whose maximum
 *                reaches the float32 threshold, at or above it, written out as a
 *                candidate (row, position, score).
 *
 * The tile is float32, item-major (T items x nl rows, C-contiguous), already masked
 * (-inf) and penalised by the caller; NaN and +inf scores count as -inf, as the numpy
 * path's sanitising does, and are never candidates. The candidates are a superset of
 * the numpy path's (the running N-th score is exact here, not a block-maximum bound, so
 * it is never lower): the kernel rescores them exactly, so results are the same bit for
 * bit (tests/test_core_kernel.py compares both backends).
 *
 * Safety: buffers come through the buffer protocol (C-contiguous, dtype checked); every
 * length and every row index is checked before the GIL is released, so a bad call raises
 * instead of reading or writing out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_buffers.h"

/* Insert v into the ascending list top[0:n] (top[0], the smallest, is dropped). */
static inline void
top_insert(float *top, Py_ssize_t n, float v)
{
    Py_ssize_t i = 0;
    while (i + 1 < n && top[i + 1] < v) {
        top[i] = top[i + 1];
        i++;
    }
    top[i] = v;
}

/* float64 threshold rounded down to float32, so that a float32 comparison never excludes;
   not finite (NaN, -inf) gives -inf. */
static inline float
round_down(double thr)
{
    if (!(thr >= -DBL_MAX && thr <= DBL_MAX)) return -INFINITY;
    float t32 = (float)thr;
    if ((double)t32 > thr) t32 = nextafterf(t32, -INFINITY);
    return t32;
}

PyDoc_STRVAR(tile_select_doc,
"tile_select(tile, width, rows, top, delta, rel, thr, thr32, offset, out_rows,\n"
"            out_pos, out_vals, /)\n--\n\n"
"Select the candidates of one scored tile (float32, item-major, T x nl, T a multiple\n"
"of width). rows (int64, nl): each tile column's row in top (float32, r x N, each row\n"
"ascending: its N largest scores so far), delta, rel, thr (float64, r) and thr32\n"
"(float32, r); top, thr and thr32 are updated for those rows. Candidates (row, offset + item,\n"
"score) go to out_rows, out_pos (int64) and out_vals (float32), which must hold T * nl\n"
"entries; returns their number. Releases the GIL.");

static PyObject *
tile_select(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[10];
    Py_buffer v[10];
    Py_ssize_t width, offset;
    if (!PyArg_ParseTuple(args, "OnOOOOOOnOOO:tile_select", &o[0], &width, &o[1], &o[2], &o[3],
                          &o[9], &o[4], &o[5], &offset, &o[6], &o[7], &o[8])) {
        return NULL;
    }
    static const char *const names[] = {
        "tile", "rows", "top", "delta", "thr", "thr32", "out_rows", "out_pos", "out_vals", "rel"};
    if (get_buffers(o, v, "fqFdDFQQFd", names)) return NULL;
    const Py_ssize_t nl = v[1].len / 8;
    const Py_ssize_t r = v[3].len / 8;
    const char *err = NULL;
    if (v[0].ndim != 2 || v[0].shape[1] != nl) err = "tile must have one column per row";
    else if (width < 1 || v[0].shape[0] % width) err = "the tile's items must be whole blocks";
    else if (v[2].ndim != 2 || v[2].shape[0] != r || v[2].shape[1] < 1)
        err = "top must have one row of at least one score per delta";
    else if (v[4].len / 8 != r || v[5].len / 4 != r) err = "thr and thr32 must match delta";
    else if (v[9].len / 8 != r) err = "rel must match delta";
    else if (offset < 0) err = "offset must be >= 0";
    const Py_ssize_t T = err ? 0 : v[0].shape[0];
    const Py_ssize_t cap = T * nl;
    if (!err && (v[6].len / 8 < cap || v[7].len / 8 < cap || v[8].len / 4 < cap))
        err = "the outputs must hold T * nl candidates";
    const int64_t *rows = (const int64_t *)v[1].buf;
    for (Py_ssize_t j = 0; !err && j < nl; j++) {
        if (rows[j] < 0 || rows[j] >= r) err = "a row index is outside top";
    }
    if (err) return value_error(err, v, 10);
    const Py_ssize_t N = v[2].shape[1];
    const Py_ssize_t nb = T / width;
    float *maxima = (float *)malloc(sizeof(float) * (size_t)(nb > 0 ? nb : 1) * (size_t)(nl > 0 ? nl : 1));
    float *lim = (float *)malloc(sizeof(float) * (size_t)(nl > 0 ? nl : 1));
    if (maxima == NULL || lim == NULL) {
        free(maxima);
        free(lim);
        release_all(v, 10);
        return PyErr_NoMemory();
    }
    const float *S = (const float *)v[0].buf;
    float *top = (float *)v[2].buf;
    const double *delta = (const double *)v[3].buf;
    const double *rel = (const double *)v[9].buf;
    double *thr = (double *)v[4].buf;
    float *thr32 = (float *)v[5].buf;
    int64_t *out_rows = (int64_t *)v[6].buf, *out_pos = (int64_t *)v[7].buf;
    float *out_vals = (float *)v[8].buf;
    Py_ssize_t count = 0;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < nl; j++) lim[j] = top[rows[j] * N];
    /* Pass 1: block maxima; a block above a row's N-th score so far is read again for
       the scores that raise it. */
    for (Py_ssize_t b = 0; b < nb; b++) {
        float *m = maxima + b * nl;
        for (Py_ssize_t j = 0; j < nl; j++) m[j] = -INFINITY;
        for (Py_ssize_t w = 0; w < width; w++) {
            const float *s = S + (b * width + w) * nl;
            for (Py_ssize_t j = 0; j < nl; j++) {
                const float x = s[j] <= FLT_MAX ? s[j] : -INFINITY; /* NaN, +inf: -inf */
                m[j] = x > m[j] ? x : m[j];
            }
        }
        for (Py_ssize_t j = 0; j < nl; j++) {
            if (!(m[j] > lim[j])) continue;
            float *tj = top + rows[j] * N;
            for (Py_ssize_t w = 0; w < width; w++) {
                const float x = S[(b * width + w) * nl + j];
                if (x <= FLT_MAX && x > tj[0]) top_insert(tj, N, x);
            }
            lim[j] = tj[0];
        }
    }
    /* The thresholds from each row's N-th score (-inf while it has fewer than N). */
    for (Py_ssize_t j = 0; j < nl; j++) {
        const int64_t g = rows[j];
        const double t = (double)top[g * N];
        /* guardrails.core._exact.lower: the same float64 operations, in the same order */
        const double low = t - delta[g] - rel[g] * fabs(t) - delta[g];
        const double x = low - 2.0 * rel[g] * fabs(low);
        thr[g] = x == x ? x : -INFINITY;
        thr32[g] = lim[j] = round_down(x);
    }
    /* Pass 2: the finite cells at or above the threshold, in blocks that reach it. */
    for (Py_ssize_t b = 0; b < nb; b++) {
        const float *m = maxima + b * nl;
        for (Py_ssize_t j = 0; j < nl; j++) {
            if (!(m[j] >= lim[j])) continue;
            for (Py_ssize_t w = 0; w < width; w++) {
                const float x = S[(b * width + w) * nl + j];
                if (x >= -FLT_MAX && x <= FLT_MAX && x >= lim[j]) {
                    out_rows[count] = rows[j];
                    out_pos[count] = offset + b * width + w;
                    out_vals[count] = x;
                    count++;
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    free(maxima);
    free(lim);
    release_all(v, 10);
    return PyLong_FromSsize_t(count);
}


/* (e, id) ranks before (e2, id2): larger score first, then smaller item id. */
static inline int
ranks_before(double e, int64_t id, double e2, int64_t id2)
{
    return e > e2 || (e == e2 && id < id2);
}

/* Insert (e, id) into a slate of kept <= N entries in rank order (the kernel's order:
   score descending, then item id); returns the new count. An entry that ranks after a
   full slate's last is dropped; ties with an entry already kept go after it. */
static inline Py_ssize_t
slate_insert(double *scores, int64_t *ids, Py_ssize_t kept, Py_ssize_t N, double e, int64_t id)
{
    if (kept == N && !ranks_before(e, id, scores[N - 1], ids[N - 1])) return kept;
    Py_ssize_t at = kept < N ? kept++ : N - 1;
    while (at > 0 && ranks_before(e, id, scores[at - 1], ids[at - 1])) {
        scores[at] = scores[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }
    scores[at] = e;
    ids[at] = id;
    return kept;
}

PyDoc_STRVAR(rescore_top_doc,
"rescore_top(queries, item_rows, ids, neg_penalty, rows, cols, pen, out_ids,\n"
"            out_scores, counts, per_cell=False, pen_keys=None, pen_vals=None,\n"
"            n_cols=0, /)\n--\n\n"
"Rescore candidate cells exactly and keep each row's top N (guardrails.core._exact.emit).\n"
"queries (float32, r x dq) and item_rows (float32, n x d, d <= dq); ids (int64): each\n"
"compact column's item row; neg_penalty (float32, one per compact column, or empty):\n"
"added after the product; rows, cols (int64, c): the cells; pen (float64, c, or empty):\n"
"subtracted last. The product is summed in lane_sum's order (eight lanes, then\n"
"((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))), so the scores are numpy's bits.\n"
"Cells whose score is not finite in float32 range are dropped. Each row's best N (score\n"
"descending, then item id ascending) go to out_ids (int64, r x N: ids[col]) and\n"
"out_scores (float64, r x N); counts (int64, r) receives how many each row got.\n"
"With per_cell, neg_penalty holds one value per cell instead (viewer groups' own\n"
"folded penalties). pen_keys (int64, strictly increasing row * n_cols + col) and\n"
"pen_vals (float64, one per key), with an empty pen: each cell found among the keys has\n"
"its value subtracted last (guardrails.core._exact.PairLookup, looked up here).\n"
"Releases the GIL.");

static PyObject *
rescore_top(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[10];
    Py_buffer v[10];
    int per_cell = 0;
    PyObject *key_obj = Py_None, *val_obj = Py_None;
    Py_ssize_t n_cols = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO|pOOn:rescore_top", &o[0], &o[1], &o[2], &o[3], &o[4],
                          &o[5], &o[6], &o[7], &o[8], &o[9], &per_cell, &key_obj, &val_obj,
                          &n_cols)) {
        return NULL;
    }
    /* The keyed penalties (optional): validated copies, taken before the other buffers. */
    Py_ssize_t n_keys = 0;
    int64_t *pkeys = NULL;
    double *pvals = NULL;
    if (key_obj != Py_None || val_obj != Py_None) {
        PyObject *ko[2] = {key_obj, val_obj};
        Py_buffer kv[2];
        static const char *const knames[] = {"pen_keys", "pen_vals"};
        if (get_buffers(ko, kv, "qd", knames)) return NULL;
        n_keys = kv[0].len / 8;
        const char *kerr = NULL;
        if (kv[1].len / 8 != n_keys) kerr = "pen_vals must have one value per key";
        else if (n_keys && n_cols <= 0) kerr = "n_cols must be positive with pen_keys";
        pkeys = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n_keys + 1));
        pvals = (double *)malloc(sizeof(double) * (size_t)(n_keys + 1));
        if (!kerr && (pkeys == NULL || pvals == NULL)) kerr = "out of memory";
        for (Py_ssize_t j = 0; !kerr && j < n_keys; j++) {
            pkeys[j] = ((const int64_t *)kv[0].buf)[j];
            pvals[j] = ((const double *)kv[1].buf)[j];
            if (j && pkeys[j] <= pkeys[j - 1]) kerr = "pen_keys must be strictly increasing";
        }
        release_all(kv, 2);
        if (kerr) {
            free(pkeys);
            free(pvals);
            if (strcmp(kerr, "out of memory") == 0) return PyErr_NoMemory();
            PyErr_SetString(PyExc_ValueError, kerr);
            return NULL;
        }
    }
    static const char *const names[] = {
        "queries", "item_rows", "ids", "neg_penalty", "rows", "cols", "pen", "out_ids",
        "out_scores", "counts"};
    if (get_buffers(o, v, "ffqfqqdQDQ", names)) {
        free(pkeys);
        free(pvals);
        return NULL;
    }
    const char *err = NULL;
    if (v[0].ndim != 2 || v[1].ndim != 2) err = "queries and item_rows must be 2-d";
    else if (v[1].shape[1] > v[0].shape[1]) err = "queries must have at least item_rows' factors";
    else if (v[7].ndim != 2 || v[8].ndim != 2 || v[7].shape[0] != v[0].shape[0] ||
             v[8].shape[0] != v[0].shape[0] || v[7].shape[1] != v[8].shape[1] || v[7].shape[1] < 1)
        err = "out_ids and out_scores must be r x N, N >= 1";
    else if (v[9].len / 8 != v[0].shape[0]) err = "counts must have one entry per query row";
    const Py_ssize_t r = err ? 0 : v[0].shape[0], dq = err ? 0 : v[0].shape[1];
    const Py_ssize_t n = err ? 0 : v[1].shape[0], d = err ? 0 : v[1].shape[1];
    const Py_ssize_t n_ids = v[2].len / 8, n_neg = v[3].len / 4;
    const Py_ssize_t c = v[4].len / 8;
    const Py_ssize_t N = err ? 0 : v[7].shape[1];
    if (!err && v[5].len / 8 != c) err = "rows and cols must have the same length";
    else if (!err && v[6].len / 8 != 0 && v[6].len / 8 != c) err = "pen must be empty or one per cell";
    else if (!err && n_neg != 0 && n_neg != (per_cell ? c : n_ids))
        err = "neg_penalty must be empty or one per column (per cell with per_cell)";
    else if (!err && n_keys && v[6].len)
        err = "pen and pen_keys cannot both be given";
    else if (!err && n_keys && r > 0 && n_cols > INT64_MAX / r)
        err = "n_cols too large for the rows' keys";
    if (err) {
        free(pkeys);
        free(pvals);
        return value_error(err, v, 10);
    }
    const int64_t *ids = (const int64_t *)v[2].buf;
    const int64_t *in_rows = (const int64_t *)v[4].buf, *in_cols = (const int64_t *)v[5].buf;
    int64_t *start = (int64_t *)calloc((size_t)r + 1, sizeof(int64_t));
    int64_t *order = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c > 0 ? c : 1));
    double *score = (double *)malloc(sizeof(double) * (size_t)(c > 0 ? c : 1));
    /* Validated copies: the loops below run without the GIL and write the outputs, so
       they never read an index from a caller's buffer (one may alias an output). */
    int64_t *rows = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c > 0 ? c : 1));
    int64_t *cols = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c > 0 ? c : 1));
    int64_t *item = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c > 0 ? c : 1));
    if (start == NULL || order == NULL || score == NULL || rows == NULL || cols == NULL ||
        item == NULL) {
        PyErr_NoMemory();
        err = "out of memory";
        goto done;
    }
    for (Py_ssize_t i = 0; !err && i < c; i++) {
        rows[i] = in_rows[i];
        cols[i] = in_cols[i];
        if (rows[i] < 0 || rows[i] >= r) err = "a cell's row is outside queries";
        else if (cols[i] < 0 || cols[i] >= n_ids) err = "a cell's column is outside ids";
        else if ((item[i] = ids[cols[i]]) < 0 || item[i] >= n) err = "an item id is outside item_rows";
    }
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        goto done;
    }
    const float *Q = (const float *)v[0].buf, *V = (const float *)v[1].buf;
    const float *neg = n_neg ? (const float *)v[3].buf : NULL;
    const double *pen = v[6].len ? (const double *)v[6].buf : NULL;
    int64_t *out_ids = (int64_t *)v[7].buf, *counts = (int64_t *)v[9].buf;
    double *out_scores = (double *)v[8].buf;

    Py_BEGIN_ALLOW_THREADS
    /* The exact scores, in lane_sum's order. */
    for (Py_ssize_t i = 0; i < c; i++) {
#if defined(__GNUC__)
        /* Cells reach scattered item rows: fetch a few cells ahead (memory-bound). */
        if (i + 8 < c) {
            const char *ahead = (const char *)(V + item[i + 8] * d);
            for (Py_ssize_t b = 0; b < d * 4; b += 64) __builtin_prefetch(ahead + b);
        }
#endif
        const float *q = Q + rows[i] * dq, *x = V + item[i] * d;
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const Py_ssize_t whole = d - d % 8;
        Py_ssize_t k0 = 0;
        if (whole) {
            for (int j = 0; j < 8; j++) lane[j] = (double)q[j] * (double)x[j];
            for (k0 = 8; k0 < whole; k0 += 8) {
                for (int j = 0; j < 8; j++) lane[j] += (double)q[k0 + j] * (double)x[k0 + j];
            }
        }
        if (k0 < d) {
            /* the last, partial lanes, padded with zero products */
            for (int j = 0; j < 8; j++) {
                const double p = k0 + j < d ? (double)q[k0 + j] * (double)x[k0 + j] : 0.0;
                lane[j] = k0 == 0 ? p : lane[j] + p;
            }
        }
        double e = d == 0 ? 0.0
                          : ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                                ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        if (neg != NULL) e += (double)(per_cell ? neg[i] : neg[cols[i]]);
        if (pen != NULL) e -= pen[i];
        if (n_keys) {
            /* Binary search of the cell's key (e - 0.0 keeps e's bits where it is absent). */
            const int64_t key = rows[i] * (int64_t)n_cols + cols[i];
            Py_ssize_t a = 0, b = n_keys;
            while (a < b) {
                const Py_ssize_t mid = a + (b - a) / 2;
                if (pkeys[mid] < key) a = mid + 1;
                else b = mid;
            }
            if (a < n_keys && pkeys[a] == key) e -= pvals[a];
        }
        score[i] = e;
    }
    /* The finite cells, grouped by row (a counting sort keeps each row's cells in order). */
    for (Py_ssize_t i = 0; i < c; i++) {
        if (fabs(score[i]) <= (double)FLT_MAX) start[rows[i] + 1]++;
    }
    for (Py_ssize_t g = 0; g < r; g++) start[g + 1] += start[g];
    for (Py_ssize_t i = 0; i < c; i++) {
        if (fabs(score[i]) <= (double)FLT_MAX) order[start[rows[i]]++] = i;
    }
    for (Py_ssize_t g = r; g > 0; g--) start[g] = start[g - 1];
    start[0] = 0;
    /* Each row's best N, by insertion (a row has few candidates). */
    for (Py_ssize_t g = 0; g < r; g++) {
        int64_t *oi = out_ids + g * N;
        double *os = out_scores + g * N;
        Py_ssize_t kept = 0;
        for (int64_t t = start[g]; t < start[g + 1]; t++)
            kept = slate_insert(os, oi, kept, N, score[order[t]], item[order[t]]);
        counts[g] = kept;
    }
    Py_END_ALLOW_THREADS
done:
    free(start);
    free(order);
    free(score);
    free(rows);
    free(cols);
    free(item);
    free(pkeys);
    free(pvals);
    release_all(v, 10);
    if (err) return NULL;
    Py_RETURN_NONE;
}

/* Index k of an int32-or-int64 buffer. */
static inline int64_t
int_at(const Py_buffer *v, Py_ssize_t k)
{
    return v->itemsize == 4 ? (int64_t)((const int32_t *)v->buf)[k] : ((const int64_t *)v->buf)[k];
}

PyDoc_STRVAR(pool_masked_doc,
"pool_masked(pool_ids, indptr, indices, hit, /)\n--\n\n"
"Mark the pool cells a viewer mask holds (guardrails.core._pool): pool_ids (int64, m x P,\n"
"global item ids, negative ids never match), a CSR mask's indptr (m + 1) and indices\n"
"(int32 or int64, any order within a row); hit (bool, m x P) is set where pool_ids[i, j]\n"
"is a stored column of row i. Releases the GIL.");

static PyObject *
pool_masked(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[4];
    Py_buffer v[4];
    if (!PyArg_ParseTuple(args, "OOOO:pool_masked", &o[0], &o[1], &o[2], &o[3])) return NULL;
    static const char *const names[] = {"pool_ids", "indptr", "indices", "hit"};
    if (get_buffers(o, v, "qiiB", names)) return NULL;
    const char *err = NULL;
    if (v[0].ndim != 2) err = "pool_ids must be m x P";
    const Py_ssize_t m = err ? 0 : v[0].shape[0], P = err ? 0 : v[0].shape[1];
    const Py_ssize_t nnz = v[2].len / v[2].itemsize;
    if (!err && v[1].len / v[1].itemsize != m + 1) err = "indptr must have m + 1 entries";
    else if (!err && v[3].len != m * P) err = "hit must be m x P";
    /* A validated copy of indptr: the loop below runs without the GIL and writes hit, so
       it never reads an offset from a caller's buffer (hit may alias one). */
    int64_t *ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m + 1));
    if (!err && ptr == NULL) {
        release_all(v, 4);
        return PyErr_NoMemory();
    }
    Py_ssize_t widest = 0;
    if (!err) ptr[0] = int_at(&v[1], 0);
    for (Py_ssize_t i = 0; !err && i < m; i++) {
        const int64_t a = ptr[i], b = ptr[i + 1] = int_at(&v[1], i + 1);
        if (a < 0 || b < a || b > nnz) err = "indptr must be non-decreasing within indices";
        else if (b - a > widest) widest = (Py_ssize_t)(b - a);
    }
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        free(ptr);
        release_all(v, 4);
        return NULL;
    }
    /* Each row's mask cells in a small open-addressing table (at least twice as many
       slots as cells, empty slots -1): a pool id costs one or two probes. */
    int bits = 4;
    while (((Py_ssize_t)1 << bits) < 2 * widest) bits++;
    const Py_ssize_t slots = (Py_ssize_t)1 << bits;
    int64_t *table = (int64_t *)malloc(sizeof(int64_t) * (size_t)slots);
    if (table == NULL) {
        free(ptr);
        release_all(v, 4);
        return PyErr_NoMemory();
    }
    const int64_t *ids = (const int64_t *)v[0].buf;
    uint8_t *hit = (uint8_t *)v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        const int64_t a = ptr[i], b = ptr[i + 1];
        const Py_ssize_t k = (Py_ssize_t)(b - a);
        if (k == 0) continue;
        int rb = 4;
        while (((Py_ssize_t)1 << rb) < 2 * k) rb++;
        const uint64_t mask = ((uint64_t)1 << rb) - 1;
        for (uint64_t s = 0; s <= mask; s++) table[s] = -1;
        for (Py_ssize_t t = 0; t < k; t++) {
            const int64_t c = int_at(&v[2], a + t);
            if (c < 0) continue;
            uint64_t s = ((uint64_t)c * 0x9E3779B97F4A7C15ULL) >> (64 - rb);
            while (table[s] != -1 && table[s] != c) s = (s + 1) & mask;
            table[s] = c;
        }
        for (Py_ssize_t j = 0; j < P; j++) {
            const int64_t g = ids[i * P + j];
            if (g < 0) continue;
            uint64_t s = ((uint64_t)g * 0x9E3779B97F4A7C15ULL) >> (64 - rb);
            while (table[s] != -1 && table[s] != g) s = (s + 1) & mask;
            if (table[s] == g) hit[i * P + j] = 1;
        }
    }
    Py_END_ALLOW_THREADS
    free(table);
    free(ptr);
    release_all(v, 4);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stored_cells_doc,
"stored_cells(indptr, indices, rows, items, hit, /)\n--\n\n"
"Whether a CSR matrix stores each cell (guardrails.core._exact._stored): indptr and\n"
"indices (int32 or int64, any order within a row) of the matrix, rows and items (int64,\n"
"c: row index and column of each cell); hit (bool, c) is set where items[k] is a stored\n"
"column of row rows[k]. Reads only those rows' cells. Releases the GIL.");

static PyObject *
stored_cells(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[5];
    Py_buffer v[5];
    if (!PyArg_ParseTuple(args, "OOOOO:stored_cells", &o[0], &o[1], &o[2], &o[3], &o[4]))
        return NULL;
    static const char *const names[] = {"indptr", "indices", "rows", "items", "hit"};
    if (get_buffers(o, v, "iiqqB", names)) return NULL;
    const Py_ssize_t m = v[0].len / v[0].itemsize - 1, nnz = v[1].len / v[1].itemsize;
    const Py_ssize_t c = v[2].len / 8;
    if (m < 0) return value_error("indptr must have at least one entry", v, 5);
    if (v[3].len / 8 != c || v[4].len != c)
        return value_error("rows, items and hit must have one entry per cell", v, 5);
    /* Validated copies of each cell's row range and item: the loop below runs without the
       GIL and writes hit, so it never reads an offset from a caller's buffer. */
    int64_t *span = (int64_t *)malloc(sizeof(int64_t) * (size_t)(2 * c + 1));
    int64_t *item = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c + 1));
    if (span == NULL || item == NULL) {
        free(span);
        free(item);
        release_all(v, 5);
        return PyErr_NoMemory();
    }
    const int64_t *rows = (const int64_t *)v[2].buf, *items = (const int64_t *)v[3].buf;
    const char *err = NULL;
    for (Py_ssize_t k = 0; !err && k < c; k++) {
        const int64_t r = rows[k];
        if (r < 0 || r >= m) {
            err = "a cell's row is outside indptr";
            break;
        }
        const int64_t a = int_at(&v[0], r), b = int_at(&v[0], r + 1);
        if (a < 0 || b < a || b > nnz) err = "indptr must be non-decreasing within indices";
        span[2 * k] = a;
        span[2 * k + 1] = b;
        item[k] = items[k];
    }
    if (err) {
        free(span);
        free(item);
        return value_error(err, v, 5);
    }
    uint8_t *hit = (uint8_t *)v[4].buf;
    const Py_buffer *ind = &v[1];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < c; k++) {
        uint8_t found = 0;
        for (int64_t t = span[2 * k]; t < span[2 * k + 1] && !found; t++) {
            found = int_at(ind, t) == item[k];
        }
        hit[k] = found;
    }
    Py_END_ALLOW_THREADS
    free(span);
    free(item);
    release_all(v, 5);
    Py_RETURN_NONE;
}

/* The k-th largest (k >= 1) of x[0:n] (n >= k), x reordered (quickselect). */
static double
kth_largest(double *x, Py_ssize_t n, Py_ssize_t k)
{
    Py_ssize_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        const double pivot = x[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot) i++;
            while (x[j] < pivot) j--;
            if (i <= j) {
                const double t = x[i];
                x[i] = x[j];
                x[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return x[want];
    }
    return x[want];
}

PyDoc_STRVAR(pool_prune_doc,
"pool_prune(pool_ids, approx, pos, neg_penalty, banned, hit, pen, delta, rel, N,\n"
"           out_rows, out_cols, /)\n--\n\n"
"The pool cells that can enter a slate (guardrails.core._pool._pool_dense, one pass).\n"
"pool_ids (int64, m x P, no repeats within a row) and approx (float32, m x P: their\n"
"unpenalised inner products); pos (int64, n_items: each item's compact column, -1 when\n"
"not in the space); neg_penalty (float32, per column, or empty), banned (bool, n_items,\n"
"or empty: the call mask), hit (bool, m x P, or empty: viewer masks), pen (float64,\n"
"m x P, or empty: viewer penalties); delta (float64, m) and rel: the rounding bound.\n"
"A cell is eligible when its id is an item of the space, not banned and not hit; its\n"
"penalised score is approx + neg_penalty - pen in float64; a row's threshold is\n"
"guardrails.core._exact.lower of its N-th largest finite penalised score. Eligible\n"
"cells at or above it, or not finite, go to out_rows and out_cols (int64, m * P, the\n"
"compact column), row by row; returns their number. Releases the GIL.");

static PyObject *
pool_prune(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[10];
    Py_buffer v[10];
    double rel;
    Py_ssize_t N;
    if (!PyArg_ParseTuple(args, "OOOOOOOOdnOO:pool_prune", &o[0], &o[1], &o[2], &o[3], &o[4],
                          &o[5], &o[6], &o[7], &rel, &N, &o[8], &o[9])) {
        return NULL;
    }
    static const char *const names[] = {
        "pool_ids", "approx", "pos", "neg_penalty", "banned", "hit", "pen", "delta", "out_rows",
        "out_cols"};
    if (get_buffers(o, v, "qfqfbbddQQ", names)) return NULL;
    const char *err = NULL;
    if (v[0].ndim != 2) err = "pool_ids must be m x P";
    const Py_ssize_t m = err ? 0 : v[0].shape[0], P = err ? 0 : v[0].shape[1];
    const Py_ssize_t n_items = v[2].len / 8, n_neg = v[3].len / 4;
    if (!err && v[1].len / 4 != m * P) err = "approx must be m x P";
    else if (!err && v[4].len != 0 && v[4].len != n_items) err = "banned must be empty or one per item";
    else if (!err && v[5].len != 0 && v[5].len != m * P) err = "hit must be empty or m x P";
    else if (!err && v[6].len != 0 && v[6].len / 8 != m * P) err = "pen must be empty or m x P";
    else if (!err && v[7].len / 8 != m) err = "delta must have one entry per row";
    else if (!err && (v[8].len / 8 < m * P || v[9].len / 8 < m * P)) err = "the outputs must hold m * P cells";
    else if (!err && N < 1) err = "N must be >= 1";
    const int64_t *pos = (const int64_t *)v[2].buf;
    if (err) return value_error(err, v, 10);
    double *a = (double *)malloc(sizeof(double) * (size_t)(P > 0 ? P : 1));
    double *fin = (double *)malloc(sizeof(double) * (size_t)(P > 0 ? P : 1));
    int64_t *col = (int64_t *)malloc(sizeof(int64_t) * (size_t)(P > 0 ? P : 1));
    if (a == NULL || fin == NULL || col == NULL) {
        free(a);
        free(fin);
        free(col);
        release_all(v, 10);
        return PyErr_NoMemory();
    }
    const int64_t *ids = (const int64_t *)v[0].buf;
    const float *approx = (const float *)v[1].buf;
    const float *neg = n_neg ? (const float *)v[3].buf : NULL;
    const uint8_t *banned = v[4].len ? (const uint8_t *)v[4].buf : NULL;
    const uint8_t *hit = v[5].len ? (const uint8_t *)v[5].buf : NULL;
    const double *pen = v[6].len ? (const double *)v[6].buf : NULL;
    const double *delta = (const double *)v[7].buf;
    int64_t *out_rows = (int64_t *)v[8].buf, *out_cols = (int64_t *)v[9].buf;
    Py_ssize_t count = 0;
    int outside = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m && !outside; i++) {
        Py_ssize_t n_fin = 0;
        for (Py_ssize_t j = 0; j < P; j++) {
            const Py_ssize_t at = i * P + j;
            const int64_t g = ids[at];
#if defined(__GNUC__)
            /* Pool ids are scattered over the catalogue: fetch a few cells ahead. */
            if (at + 16 < m * P && ids[at + 16] >= 0 && ids[at + 16] < n_items) {
                __builtin_prefetch(pos + ids[at + 16]);
                if (banned != NULL) __builtin_prefetch(banned + ids[at + 16]);
            }
            if (neg != NULL && at + 8 < m * P && ids[at + 8] >= 0 && ids[at + 8] < n_items) {
                const int64_t c8 = pos[ids[at + 8]];
                if (c8 >= 0 && c8 < n_neg) __builtin_prefetch(neg + c8);
            }
#endif
            col[j] = -1;
            if (g < 0 || g >= n_items || pos[g] < 0) continue;
            if ((banned != NULL && banned[g]) || (hit != NULL && hit[at])) continue;
            if (neg != NULL && pos[g] >= n_neg) {
                outside = 1; /* checked here, not over every item beforehand */
                break;
            }
            col[j] = pos[g];
            double x = (double)approx[at];
            if (neg != NULL) x += (double)neg[pos[g]];
            if (pen != NULL) x -= pen[at];
            a[j] = x;
            if (x >= -DBL_MAX && x <= DBL_MAX) fin[n_fin++] = x;
        }
        if (outside) break;
        double thr = -INFINITY;
        if (n_fin >= N) {
            /* guardrails.core._exact.lower: the same float64 operations, in the same order */
            const double t = kth_largest(fin, n_fin, N);
            const double low = t - delta[i] - rel * fabs(t);
            const double x = low - delta[i] - 2.0 * rel * fabs(low);
            thr = x == x ? x : -INFINITY;
        }
        for (Py_ssize_t j = 0; j < P; j++) {
            if (col[j] < 0) continue;
            const double x = a[j];
            if (!(x >= -DBL_MAX && x <= DBL_MAX) || x >= thr) {
                out_rows[count] = i;
                out_cols[count] = col[j];
                count++;
            }
        }
    }
    Py_END_ALLOW_THREADS
    free(a);
    free(fin);
    free(col);
    release_all(v, 10);
    if (outside) {
        PyErr_SetString(PyExc_ValueError, "a column of pos is outside neg_penalty");
        return NULL;
    }
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(merge_slates_doc,
"merge_slates(a_ids, a_scores, b_ids, b_scores, out_ids, out_scores, /)\n--\n\n"
"Each row's top N of two slates of different items (guardrails.retrieval's head and\n"
"pool): a_ids (int64, m x Na), a_scores (float64, m x Na), b_ids and b_scores (m x Nb);\n"
"a negative id is padding (score -inf, last). Ordered by score descending, then item id\n"
"ascending (the kernel's order); out_ids and out_scores (m x N) receive them, padded\n"
"with -1 and -inf. Releases the GIL.");

static PyObject *
merge_slates(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[6];
    Py_buffer v[6];
    if (!PyArg_ParseTuple(args, "OOOOOO:merge_slates", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5]))
        return NULL;
    static const char *const names[] = {
        "a_ids", "a_scores", "b_ids", "b_scores", "out_ids", "out_scores"};
    if (get_buffers(o, v, "qdqdQD", names)) return NULL;
    const char *err = NULL;
    for (int k = 0; k < 6 && !err; k++) {
        if (v[k].ndim != 2 || v[k].shape[0] != v[0].shape[0]) err = "every slate must be m x (its N)";
    }
    if (!err && (v[1].shape[1] != v[0].shape[1] || v[3].shape[1] != v[2].shape[1] ||
                 v[5].shape[1] != v[4].shape[1] || v[4].shape[1] < 1))
        err = "ids and scores must have the same shape, N >= 1";
    if (err) return value_error(err, v, 6);
    const Py_ssize_t m = v[0].shape[0], Na = v[0].shape[1], Nb = v[2].shape[1];
    const Py_ssize_t N = v[4].shape[1];
    const int64_t *ai = (const int64_t *)v[0].buf, *bi = (const int64_t *)v[2].buf;
    const double *as = (const double *)v[1].buf, *bs = (const double *)v[3].buf;
    int64_t *oi = (int64_t *)v[4].buf;
    double *os = (double *)v[5].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t *ti = oi + i * N;
        double *ts = os + i * N;
        Py_ssize_t kept = 0;
        for (Py_ssize_t t = 0; t < Na + Nb; t++) {
            const int64_t id = t < Na ? ai[i * Na + t] : bi[i * Nb + t - Na];
            if (id < 0) continue; /* padding */
            const double e = t < Na ? as[i * Na + t] : bs[i * Nb + t - Na];
            kept = slate_insert(ts, ti, kept, N, e, id);
        }
        for (Py_ssize_t t = kept; t < N; t++) {
            ti[t] = -1;
            ts[t] = -INFINITY;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(v, 6);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    GR_METHOD(tile_select),
    GR_METHOD(rescore_top),
    GR_METHOD(pool_masked),
    GR_METHOD(stored_cells),
    GR_METHOD(pool_prune),
    GR_METHOD(merge_slates),
    {NULL, NULL, 0, NULL},
};

GR_MODULE(_tile, "Compiled selection step of guardrails.core.kernel's fused path.")
