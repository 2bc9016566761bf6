/*
 * What the compiled modules (guardrails/expand/_spmm.c, guardrails/core/_tile.c) share:
 * buffer checks (a Python object's buffer taken C-contiguous, of one element type, in
 * native byte order, or a TypeError naming the argument) and the module definition.
 */
#ifndef GUARDRAILS_BUFFERS_H
#define GUARDRAILS_BUFFERS_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A C-contiguous buffer of one element type: kind 'f' (float32), 'd' (float64), 'q'
   (int64), 'i' (signed int32 or int64) or 'b' (bool or uint8, one byte). */
static int
get_buffer(PyObject *obj, Py_buffer *view, int writable, char kind, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        view->obj = NULL;
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    /* Native byte order only: '<' or '>' (and '!') name one order explicitly. */
    const uint16_t probe = 1;
    const char foreign = *(const unsigned char *)&probe == 1 ? '>' : '<';
    int ok = 1;
    while (*f == '@' || *f == '=' || *f == '<' || *f == '>' || *f == '!') {
        if (*f == foreign || *f == '!') ok = 0;
        f++;
    }
    ok = ok && f[0] != '\0' && f[1] == '\0';
    if (ok && kind == 'f') {
        ok = f[0] == 'f' && view->itemsize == 4;
    } else if (ok && kind == 'd') {
        ok = f[0] == 'd' && view->itemsize == 8;
    } else if (ok && kind == 'b') {
        ok = strchr("?B", f[0]) != NULL && view->itemsize == 1;
    } else if (ok && kind == 'q') {
        ok = strchr("lqn", f[0]) != NULL && view->itemsize == 8;
    } else if (ok) {
        ok = strchr("ilqn", f[0]) != NULL && (view->itemsize == 4 || view->itemsize == 8);
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be %s in native byte order, got format '%s'",
                     name,
                     kind == 'f'   ? "float32"
                     : kind == 'd' ? "float64"
                     : kind == 'q' ? "int64"
                     : kind == 'b' ? "bool or uint8"
                                   : "int32 or int64",
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* Release every buffer taken so far (the untaken ones have obj NULL). */
static void
release_all(Py_buffer *views, int n)
{
    for (int k = 0; k < n; k++) {
        if (views[k].obj != NULL) PyBuffer_Release(&views[k]);
    }
}

/* Take the buffers of o[0..n) into v[0..n), n = strlen(spec): spec[k] is buffer k's kind
   (as get_buffer's), upper case where it must be writable; names[k] names it in errors.
   On failure, every buffer taken is released and -1 returned (a Python error set). */
static int
get_buffers(PyObject *const *o, Py_buffer *v, const char *spec, const char *const *names)
{
    const int n = (int)strlen(spec);
    memset(v, 0, (size_t)n * sizeof(Py_buffer));
    for (int k = 0; k < n; k++) {
        const char c = spec[k];
        const int writable = c >= 'A' && c <= 'Z';
        if (get_buffer(o[k], &v[k], writable, writable ? (char)(c - 'A' + 'a') : c, names[k])) {
            release_all(v, k);
            return -1;
        }
    }
    return 0;
}

/* Raise ValueError(err), release the n buffers of v and return NULL (for `return`). */
static inline PyObject *
value_error(const char *err, Py_buffer *v, int n)
{
    PyErr_SetString(PyExc_ValueError, err);
    release_all(v, n);
    return NULL;
}

/* A `methods` table entry: the function FN, its docstring FN_doc, positional arguments. */
#define GR_METHOD(FN) {#FN, FN, METH_VARARGS, FN##_doc}

/* The module NAME (its PyInit_NAME) with docstring DOC and the file's `methods` table. */
#define GR_MODULE(NAME, DOC)                                                              \
    static struct PyModuleDef gr_module = {                                                \
        PyModuleDef_HEAD_INIT, #NAME, DOC, -1, methods, NULL, NULL, NULL, NULL,           \
    };                                                                                     \
    PyMODINIT_FUNC PyInit_##NAME(void) { return PyModule_Create(&gr_module); }

#endif
