// Operator schemas of the `cg2a` namespace and the Python module that loads
// them. Backends register their kernels in their own files
// (cpu_kernels.cpp, cuda/cuda_kernels.cu) with TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

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

PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cg2a fused gradient aggregation ops", -1,
      module_methods};
  return PyModule_Create(&module_def);
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
}
