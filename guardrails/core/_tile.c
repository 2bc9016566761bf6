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
    PyObject *o[11];
    Py_buffer v[11];
    Py_ssize_t width, offset;
    memset(v, 0, sizeof(v));
    if (!PyArg_ParseTuple(args, "OnOOOOOOnOOO:tile_select", &o[0], &width, &o[1], &o[2], &o[3],
                          &o[9], &o[4], &o[5], &offset, &o[6], &o[7], &o[8])) {
        return NULL;
    }
    if (get_buffer(o[0], &v[0], 0, 'f', "tile") || get_buffer(o[1], &v[1], 0, 'q', "rows") ||
        get_buffer(o[2], &v[2], 1, 'f', "top") || get_buffer(o[3], &v[3], 0, 'd', "delta") ||
        get_buffer(o[4], &v[4], 1, 'd', "thr") || get_buffer(o[5], &v[5], 1, 'f', "thr32") ||
        get_buffer(o[6], &v[6], 1, 'q', "out_rows") || get_buffer(o[7], &v[7], 1, 'q', "out_pos") ||
        get_buffer(o[8], &v[8], 1, 'f', "out_vals") || get_buffer(o[9], &v[9], 0, 'd', "rel")) {
        release_all(v, 10);
        return NULL;
    }
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
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        release_all(v, 10);
        return NULL;
    }
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

static PyMethodDef methods[] = {
    {"tile_select", tile_select, METH_VARARGS, tile_select_doc},
    {NULL, NULL, 0, NULL},
};

GR_MODULE(_tile, "Compiled selection step of guardrails.core.kernel's fused path.")
