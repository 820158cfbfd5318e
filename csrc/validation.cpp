// Validation and row-view preparation shared by both backends.
#include "cg2a_ops.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "cg2a_elementwise.h"

namespace cg2a {

at::ScalarType accumulation_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

int64_t check_grads(at::TensorList grads, const char* op) {
  TORCH_CHECK_VALUE(!grads.empty(), op,
                    ": grads is an empty list; pass at least one stacked "
                    "gradient tensor of shape [K, *shape]");
  const at::Tensor& first = grads[0];
  TORCH_CHECK_VALUE(first.dim() >= 1, op,
                    ": grads[0] is 0-dimensional; each tensor must have the "
                    "K per-loss gradients stacked on dim 0");
  const int64_t K = first.size(0);
  TORCH_CHECK_VALUE(K >= 1, op, ": grads[0] has K = 0 gradients on dim 0");
  TORCH_CHECK_VALUE(K <= kMaxK, op, ": K = ", K,
                    " exceeds the fused kernels' limit of ", kMaxK,
                    "; use cg2a_ext.reference for larger K");
  const auto dtype = first.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble ||
                       dtype == at::kHalf || dtype == at::kBFloat16,
                   op, ": grads[0] has dtype ", dtype,
                   "; expected float32, float64, float16 or bfloat16");
  for (size_t t = 0; t < grads.size(); ++t) {
    const at::Tensor& g = grads[t];
    TORCH_CHECK_VALUE(g.defined(), op, ": grads[", t, "] is undefined (None)");
    TORCH_CHECK_VALUE(g.dim() >= 1, op, ": grads[", t,
                      "] is 0-dimensional; expected [K, *shape] with K = ", K);
    TORCH_CHECK_VALUE(g.size(0) == K, op, ": grads[", t, "] has K = ",
                      g.size(0), " gradients on dim 0 but grads[0] has K = ",
                      K);
    TORCH_CHECK_VALUE(g.device() == first.device(), op, ": grads[", t,
                      "] is on ", g.device(), " but grads[0] is on ",
                      first.device());
    TORCH_CHECK_TYPE(g.scalar_type() == dtype, op, ": grads[", t,
                     "] has dtype ", g.scalar_type(), " but grads[0] has ",
                     dtype);
  }
  return K;
}

void check_weights(const at::Tensor& weights, at::TensorList grads,
                   const char* op) {
  const int64_t K = grads[0].size(0);
  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == K, op,
                    ": weights must have shape [K] = [", K, "], got ",
                    weights.sizes());
  TORCH_CHECK_VALUE(weights.device() == grads[0].device(), op,
                    ": weights are on ", weights.device(),
                    " but the gradients are on ", grads[0].device());
  const auto acc = accumulation_dtype(grads[0].scalar_type());
  TORCH_CHECK_TYPE(weights.scalar_type() == acc, op, ": weights have dtype ",
                   weights.scalar_type(), "; expected ", acc,
                   " (the accumulation dtype of ", grads[0].scalar_type(),
                   " gradients)");
}

void check_out(at::TensorList out, at::TensorList grads, const char* op) {
  TORCH_CHECK_VALUE(out.size() == grads.size(), op, ": out has ", out.size(),
                    " tensors but grads has ", grads.size());
  for (size_t t = 0; t < out.size(); ++t) {
    const at::Tensor& o = out[t];
    const at::Tensor& g = grads[t];
    TORCH_CHECK_VALUE(o.defined(), op, ": out[", t, "] is undefined (None)");
    TORCH_CHECK_VALUE(o.sizes() == g.sizes().slice(1), op, ": out[", t,
                      "] has shape ", o.sizes(), " but grads[", t,
                      "] holds gradients of shape ", g.sizes().slice(1));
    TORCH_CHECK_TYPE(o.scalar_type() == g.scalar_type(), op, ": out[", t,
                     "] has dtype ", o.scalar_type(), " but grads[", t,
                     "] has ", g.scalar_type());
    TORCH_CHECK_VALUE(o.device() == g.device(), op, ": out[", t, "] is on ",
                      o.device(), " but grads[", t, "] is on ", g.device());
  }
}

void check_mask(int64_t mask, const char* op) {
  TORCH_CHECK_VALUE(mask == kMaskAgree || mask == kMaskPositive, op,
                    ": unknown mask mode ", mask,
                    "; expected 0 (agree) or 1 (positive)");
}

// True when every row of g ([K, *shape]) is one contiguous run of elements.
static bool rows_are_contiguous(const at::Tensor& g) {
  int64_t expected = 1;
  for (int64_t d = g.dim() - 1; d >= 1; --d) {
    if (g.size(d) != 1 && g.stride(d) != expected) return false;
    expected *= g.size(d);
  }
  return true;
}

std::vector<RowView> row_views(at::TensorList grads) {
  std::vector<RowView> views;
  views.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    const at::Tensor rows = rows_are_contiguous(g) ? g : g.contiguous();
    const int64_t numel = rows.size(0) == 0 ? 0 : rows.numel() / rows.size(0);
    // With K = 1 the row stride is never used; keep it well defined.
    const int64_t row_stride = rows.size(0) > 1 ? rows.stride(0) : numel;
    views.push_back(RowView{rows, row_stride, numel});
  }
  return views;
}

}  // namespace cg2a
