// Host-side pieces shared by the CPU and CUDA implementations of the cg2a ops:
// input validation (one set of error messages for both backends) and the
// description of a tensor list as K rows of contiguous elements.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace cg2a {

// One stacked gradient [K, *shape] seen as K rows of `numel` contiguous
// elements, `row_stride` elements apart. Rows need not be adjacent, so a
// slice of a larger buffer is read where it lies.
struct RowView {
  at::Tensor tensor;   // keeps the storage alive (a contiguous copy only when
                       // the rows themselves were not contiguous)
  int64_t row_stride;  // elements between row k and row k + 1
  int64_t numel;       // elements per row
};

// Checks the stacked gradients and returns K. Raises with a message that
// names the offending tensor and the problem.
int64_t check_grads(at::TensorList grads, const char* op);

// Checks `weights` (K values, accumulation dtype, same device as grads).
void check_weights(const at::Tensor& weights, at::TensorList grads,
                   const char* op);

// Checks the output list against the stacked gradients.
void check_out(at::TensorList out, at::TensorList grads, const char* op);

// Checks the mask mode (see MaskMode).
void check_mask(int64_t mask, const char* op);

// Row views of every stacked gradient. A tensor whose rows are not each
// contiguous is copied once (documented fallback); the common layouts
// (contiguous, or row slices of a larger buffer) are not.
std::vector<RowView> row_views(at::TensorList grads);

// The functional `combine` of either backend: allocates the outputs and runs
// that backend's `combine_out` into them.
template <typename CombineOut>
std::tuple<std::vector<at::Tensor>, at::Tensor> combine_into_new_outputs(
    at::TensorList grads, const at::Tensor& weights, double gamma, int64_t mask,
    CombineOut combine_out) {
  check_grads(grads, "cg2a::combine");
  std::vector<at::Tensor> out;
  out.reserve(grads.size());
  for (const at::Tensor& g : grads)
    out.push_back(at::empty(g.sizes().slice(1), g.options()));
  at::Tensor conflicts = combine_out(grads, weights, gamma, mask, out);
  return {std::move(out), std::move(conflicts)};
}

// The scalar type the kernels accumulate in (float64 for float64 inputs,
// float32 otherwise); also the dtype of gram() and of the weights.
at::ScalarType accumulation_dtype(at::ScalarType input);

}  // namespace cg2a
