// Host-side pieces shared by the CPU and CUDA implementations of the cg2a ops:
// input validation (one set of error messages for both backends) and the
// description of a tensor list as K rows of contiguous elements.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <optional>
#include <string_view>

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

// The mask mode of a mask name ("agree" or "positive").
int64_t parse_mask(std::string_view mask, const char* op);

// What aggregate does with a non-finite input, or an output it cannot
// represent: raise (nothing written for a non-finite input), or write zeros
// and report it in the flags.
enum class NonfinitePolicy { kRaise, kZero };
NonfinitePolicy parse_nonfinite(std::string_view policy, const char* op);

// gamma must be finite and in [0, 1].
void check_gamma(double gamma, const char* op);

// Refuses outputs that share memory with any input or with another output,
// or that overlap themselves (an expanded tensor), naming both tensors.
void check_no_overlap(at::TensorList out, at::TensorList grads,
                      const char* op);

// Refuses non-finite weight values. Reads the K values (on CUDA a copy to
// the host: the raw combine ops synchronise for it; aggregate never does).
void check_weight_values(const at::Tensor& weights, const char* op);

// Every metadata check of each op, in the order the kernels run them; the
// registered `*_check` ops (what the fake kernels call) run these too, so a
// meta tensor among CPU tensors is refused with the same message.
void check_gram_inputs(at::TensorList grads, const char* op);
void check_combine_inputs(at::TensorList grads, const at::Tensor& weights,
                          double gamma, int64_t mask,
                          std::optional<at::TensorList> out, const char* op);
struct AggregateOptions {
  int64_t mask;
  NonfinitePolicy nonfinite;
};
AggregateOptions check_aggregate_inputs(at::TensorList grads, double gamma,
                                        std::string_view mask,
                                        std::string_view nonfinite,
                                        std::optional<at::TensorList> out,
                                        const char* op);

// The outputs of aggregate besides the aggregated gradient: the Gram matrix
// [K, K] and the weights [K] (both float64), the conflict fraction (float64,
// 0-dim) and the flags (bool [2]: a non-finite input; an overflow).
using AggregateStats = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Messages of the two refusals of nonfinite="raise" (shared by the backends).
[[noreturn]] void raise_nonfinite_input(const at::Tensor& gram_cpu, const char* op);
[[noreturn]] void raise_overflow(bool in_gram, at::ScalarType dtype,
                                 const char* op);

// Allocates the outputs of the functional `aggregate` and runs that
// backend's `aggregate_out` into them.
template <typename AggregateOut>
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
aggregate_into_new_outputs(at::TensorList grads, double gamma, bool gas,
                           std::string_view mask, std::string_view nonfinite,
                           AggregateOut aggregate_out) {
  check_aggregate_inputs(grads, gamma, mask, nonfinite, std::nullopt, "cg2a::aggregate");
  std::vector<at::Tensor> out;
  out.reserve(grads.size());
  for (const at::Tensor& g : grads)
    out.push_back(at::empty(g.sizes().slice(1), g.options()));
  auto [gram, weights, fraction, flags] =
      aggregate_out(grads, gamma, gas, mask, nonfinite, out);
  return {std::move(out), std::move(gram), std::move(weights),
          std::move(fraction), std::move(flags)};
}

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
  check_combine_inputs(grads, weights, gamma, mask, std::nullopt, "cg2a::combine");
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
