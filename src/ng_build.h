/* The policy builder (ng_build.c). */
#ifndef NETGUARD_NG_BUILD_H
#define NETGUARD_NG_BUILD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ng_policy.h"

/* Builder input: the packed rules from netguard._impl. */
typedef struct {
    Py_buffer v4, v6;
    PyObject *portsets, *unix, *hosts; /* borrowed */
    uint32_t flags;
} build_input;

/* Build a blob from `in`: 0 with *blob_out (PyMem_Malloc'd, owned by the caller) and
   *size_out, or -1 with an exception set. */
int policy_build(build_input *in, char **blob_out, size_t *size_out);

#endif /* NETGUARD_NG_BUILD_H */
