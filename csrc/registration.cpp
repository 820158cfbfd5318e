// Operator schemas of the `cg2a` namespace and the Python module that loads
// them. Backends register their kernels in their own files
// (cpu_kernels.cpp, cuda/cuda_kernels.cu) with TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

#include "cg2a_elementwise.h"

extern "C" {
// `import cg2a_ext._C` loads this library, which runs the static
// TORCH_LIBRARY registrations below; the module itself only reports how the
// library was built.
static PyObject* has_cuda_kernels(PyObject*, PyObject*) {
#ifdef CG2A_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef module_methods[] = {
    {"has_cuda_kernels", has_cuda_kernels, METH_NOARGS,
     "True when the CUDA kernels were compiled into this build."},
    {nullptr, nullptr, 0, nullptr}};

// The library's constants, for the Python front (never copied there):
// MAX_K, the largest K of the fused ops, and MASKS, the mask names by mode
// number (the `mask` int of combine).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cg2a fused gradient aggregation ops", -1,
      module_methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  PyObject* masks = Py_BuildValue("(ss)", "agree", "positive");
  if (PyModule_AddIntConstant(module, "MAX_K", cg2a::kMaxK) < 0 || masks == nullptr ||
      PyModule_AddObject(module, "MASKS", masks) < 0) {
    Py_XDECREF(masks);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(cg2a, m) {
  // G[i, j] = <g_i, g_j> over all tensors; [K, K] in the accumulation dtype.
  m.def("gram(Tensor[] grads) -> Tensor");
  // out_t = m * sum_i weights[i] * grads_t[i] with m = 1 where the K signs
  // agree and gamma elsewhere; also returns the number of conflicting
  // elements (int64, 0-dim).
  m.def(
      "combine(Tensor[] grads, Tensor weights, float gamma, int mask) -> "
      "(Tensor[], Tensor)");
  // The same, written into `out`; returns the conflict count.
  m.def(
      "combine_out(Tensor[] grads, Tensor weights, float gamma, int mask, "
      "Tensor(a!)[] out) -> Tensor");
  // The whole CG2A aggregation in one op: the Gram matrix (in float64), GAS
  // (gas) or mean weights (in float64), the finite guard, the damped
  // combination (gamma where the signs do not agree under `mask`: "agree" or
  // "positive") and the conflict fraction. nonfinite: "raise" (ValueError,
  // nothing written, for a non-finite input) or "zero" (zeros written, flags
  // set). Returns (out, gram [K, K] float64, weights [K] float64, conflict
  // fraction (0-dim float64), flags (bool [2]: a non-finite input; an
  // overflow of the Gram matrix or of the output dtype)).
  m.def(
      "aggregate(Tensor[] grads, float gamma, bool gas, str mask, "
      "str nonfinite) -> (Tensor[], Tensor, Tensor, Tensor, Tensor)");
  // The same, written into `out` (which must not overlap any input).
  m.def(
      "aggregate_out(Tensor[] grads, float gamma, bool gas, str mask, "
      "str nonfinite, Tensor(a!)[] out) -> (Tensor, Tensor, Tensor, Tensor)");
  // The metadata checks of each op alone (what the fake kernels run).
  m.def("gram_check(Tensor[] grads) -> ()");
  m.def("combine_check(Tensor[] grads, Tensor weights, float gamma, int mask) -> ()");
  m.def(
      "combine_out_check(Tensor[] grads, Tensor weights, float gamma, int mask, "
      "Tensor[] out) -> ()");
  m.def(
      "aggregate_check(Tensor[] grads, float gamma, bool gas, str mask, "
      "str nonfinite) -> ()");
  m.def(
      "aggregate_out_check(Tensor[] grads, float gamma, bool gas, str mask, "
      "str nonfinite, Tensor[] out) -> ()");
}
