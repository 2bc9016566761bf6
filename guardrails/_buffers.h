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

/* The module NAME (its PyInit_NAME) with docstring DOC and the file's `methods` table. */
#define GR_MODULE(NAME, DOC)                                                              \
    static struct PyModuleDef gr_module = {                                                \
        PyModuleDef_HEAD_INIT, #NAME, DOC, -1, methods, NULL, NULL, NULL, NULL,           \
    };                                                                                     \
    PyMODINIT_FUNC PyInit_##NAME(void) { return PyModule_Create(&gr_module); }

#endif
