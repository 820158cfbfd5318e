// Validation and row-view preparation shared by both backends.
#include "cg2a_ops.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "cg2a_elementwise.h"

namespace cg2a {

// Python's name of a dtype ("torch.float32"), for messages.
std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(dtype);
  }
}

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
                   op, ": grads[0] has dtype ", dtype_name(dtype),
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
                     "] has dtype ", dtype_name(g.scalar_type()),
                     " but grads[0] has ", dtype_name(dtype));
  }
  return K;
}

void check_weights(const at::Tensor& weights, at::TensorList grads,
                   const char* op) {
  const int64_t K = grads[0].size(0);
  TORCH_CHECK_VALUE(weights.defined(), op, ": weights are undefined (None)");
  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == K, op,
                    ": weights must have shape [K] = [", K, "], got ",
                    weights.sizes());
  TORCH_CHECK_VALUE(weights.device() == grads[0].device(), op,
                    ": weights are on ", weights.device(),
                    " but the gradients are on ", grads[0].device());
  const auto acc = accumulation_dtype(grads[0].scalar_type());
  TORCH_CHECK_TYPE(weights.scalar_type() == acc, op, ": weights have dtype ",
                   dtype_name(weights.scalar_type()), "; expected ",
                   dtype_name(acc), " (the accumulation dtype of ",
                   dtype_name(grads[0].scalar_type()), " gradients)");
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
                     "] has dtype ", dtype_name(o.scalar_type()), " but grads[",
                     t, "] has ", dtype_name(g.scalar_type()));
    TORCH_CHECK_VALUE(o.device() == g.device(), op, ": out[", t, "] is on ",
                      o.device(), " but grads[", t, "] is on ", g.device());
  }
}

void check_mask(int64_t mask, const char* op) {
  TORCH_CHECK_VALUE(mask == kMaskAgree || mask == kMaskPositive, op,
                    ": unknown mask mode ", mask,
                    "; expected 0 (agree) or 1 (positive)");
}

int64_t parse_mask(std::string_view mask, const char* op) {
  if (mask == "agree") return kMaskAgree;
  if (mask == "positive") return kMaskPositive;
  TORCH_CHECK_VALUE(false, op, ": unknown mask '", mask,
                    "'; expected 'agree' or 'positive'");
}

NonfinitePolicy parse_nonfinite(std::string_view policy, const char* op) {
  if (policy == "raise") return NonfinitePolicy::kRaise;
  if (policy == "zero") return NonfinitePolicy::kZero;
  TORCH_CHECK_VALUE(false, op, ": unknown nonfinite policy '", policy,
                    "'; expected 'raise' or 'zero'");
}

void check_gamma(double gamma, const char* op) {
  // Written so that NaN fails too.
  TORCH_CHECK_VALUE(gamma >= 0.0 && gamma <= 1.0, op, ": gamma = ", gamma,
                    "; expected a finite value in [0, 1]");
}

void check_weight_values(const at::Tensor& weights, const char* op) {
  const at::Tensor host = weights.to(at::kCPU, at::kDouble).contiguous();
  const double* w = host.const_data_ptr<double>();
  bool finite = true;
  for (int64_t i = 0; i < host.numel(); ++i) finite = finite && std::isfinite(w[i]);
  if (finite) return;
  std::ostringstream values;
  for (int64_t i = 0; i < host.numel(); ++i) values << (i ? ", " : "") << w[i];
  TORCH_CHECK_VALUE(false, op, ": weights hold a non-finite value (weights = [",
                    values.str(), "]); expected K finite values");
}

namespace {

// The bytes [begin, end) a tensor's elements can occupy.
struct Span {
  uintptr_t begin;
  uintptr_t end;
  bool is_out;
  size_t index;
};

Span span_of(const at::Tensor& t, bool is_out, size_t index) {
  int64_t low = 0;
  int64_t high = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t extent = (t.size(d) - 1) * t.stride(d);
    (extent < 0 ? low : high) += extent;
  }
  const auto base = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const auto item = uintptr_t(t.element_size());
  return Span{base + uintptr_t(low * int64_t(item)),
              base + uintptr_t((high + 1) * int64_t(item)), is_out, index};
}

std::string name_of(const Span& s) {
  return (s.is_out ? "out[" : "grads[") + std::to_string(s.index) + "]";
}

}  // namespace

void check_no_overlap(at::TensorList out, at::TensorList grads,
                      const char* op) {
  std::vector<Span> spans;
  spans.reserve(out.size() + grads.size());
  for (size_t t = 0; t < out.size(); ++t) {
    TORCH_CHECK_VALUE(at::has_internal_overlap(out[t]) != at::MemOverlap::Yes,
                      op, ": out[", t, "] has elements that share memory (an "
                      "expanded tensor?); each output element needs its own memory");
    if (out[t].numel() > 0) spans.push_back(span_of(out[t], true, t));
  }
  for (size_t t = 0; t < grads.size(); ++t)
    if (grads[t].numel() > 0) spans.push_back(span_of(grads[t], false, t));
  // Sweep in address order: a span intersects an earlier one exactly when it
  // begins before the largest end seen so far (that span's owner is named).
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const Span* reach_any = nullptr;  // earlier span reaching furthest
  const Span* reach_out = nullptr;  // earlier output span reaching furthest
  for (const Span& s : spans) {
    const Span* other = s.is_out ? reach_any : reach_out;
    if (other != nullptr && s.begin < other->end) {
      const Span& first = other->is_out ? *other : s;
      const Span& second = other->is_out ? s : *other;
      TORCH_CHECK_VALUE(false, op, ": ", name_of(first), " overlaps ",
                        name_of(second), " in memory; the outputs must not "
                        "share memory with any input or with each other");
    }
    if (reach_any == nullptr || s.end > reach_any->end) reach_any = &s;
    if (s.is_out && (reach_out == nullptr || s.end > reach_out->end)) reach_out = &s;
  }
}

void check_gram_inputs(at::TensorList grads, const char* op) {
  check_grads(grads, op);
}

void check_combine_inputs(at::TensorList grads, const at::Tensor& weights,
                          double gamma, int64_t mask,
                          std::optional<at::TensorList> out, const char* op) {
  check_grads(grads, op);
  check_weights(weights, grads, op);
  check_gamma(gamma, op);
  check_mask(mask, op);
  if (out.has_value()) check_out(*out, grads, op);
}

AggregateOptions check_aggregate_inputs(at::TensorList grads, double gamma,
                                        std::string_view mask,
                                        std::string_view nonfinite,
                                        std::optional<at::TensorList> out,
                                        const char* op) {
  check_grads(grads, op);
  check_gamma(gamma, op);
  AggregateOptions options{parse_mask(mask, op), parse_nonfinite(nonfinite, op)};
  if (out.has_value()) check_out(*out, grads, op);
  return options;
}

void raise_nonfinite_input(const at::Tensor& gram_cpu, const char* op) {
  const at::Tensor g = gram_cpu.to(at::kDouble).contiguous();
  const int64_t K = g.size(0);
  std::ostringstream norms;
  for (int64_t i = 0; i < K; ++i) {
    const double d = g.const_data_ptr<double>()[i * K + i];
    norms << (i ? ", " : "") << std::sqrt(d);
  }
  TORCH_CHECK_VALUE(false, op, ": non-finite input: an input gradient "
                    "contains NaN or Inf (per-loss gradient norms: [",
                    norms.str(), "]); nothing was written. Pass "
                    "nonfinite='zero' to zero the output instead.");
}

void raise_overflow(bool in_gram, at::ScalarType dtype, const char* op) {
  if (in_gram)
    TORCH_CHECK_VALUE(false, op, ": overflow: every input is finite but their "
                      "Gram matrix overflows float64 (a per-loss gradient norm "
                      "above about 1e154); nothing was written. Scale the "
                      "losses down.");
  TORCH_CHECK_VALUE(false, op, ": overflow: every input is finite but the "
                    "aggregated gradient does not fit in ", dtype_name(dtype),
                    " (an element beyond its largest finite value); the "
                    "output was zeroed.");
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

// The `*_check` ops: the metadata checks of each op alone, for the fake
// (meta) kernels registered in Python, so that FakeTensor and meta calls are
// refused with the backends' own messages. They read no tensor data.
namespace {

void gram_check(at::TensorList grads) { check_gram_inputs(grads, "cg2a::gram"); }

void combine_check(at::TensorList grads, const at::Tensor& weights,
                   double gamma, int64_t mask) {
  check_combine_inputs(grads, weights, gamma, mask, std::nullopt, "cg2a::combine");
}

void combine_out_check(at::TensorList grads, const at::Tensor& weights,
                       double gamma, int64_t mask, at::TensorList out) {
  check_combine_inputs(grads, weights, gamma, mask, out, "cg2a::combine_out");
}

void aggregate_check(at::TensorList grads, double gamma, bool gas,
                     std::string_view mask, std::string_view nonfinite) {
  check_aggregate_inputs(grads, gamma, mask, nonfinite, std::nullopt,
                         "cg2a::aggregate");
}

void aggregate_out_check(at::TensorList grads, double gamma, bool gas,
                         std::string_view mask, std::string_view nonfinite,
                         at::TensorList out) {
  check_aggregate_inputs(grads, gamma, mask, nonfinite, out,
                         "cg2a::aggregate_out");
}

// The fallback of every op for dispatch keys without a kernel of their own:
// an empty `grads` list (no tensor to dispatch on) and devices other than
// CPU, CUDA and meta. It runs the op's checks, so an empty list gets the
// library's message, then names the device it has no kernel for.
[[noreturn]] void no_kernel_for(const at::Tensor& t, const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": no kernel for tensors on ", t.device(),
                              "; cg2a_ext has CPU and CUDA kernels");
}

at::Tensor gram_fallback(at::TensorList grads) {
  gram_check(grads);
  no_kernel_for(grads[0], "cg2a::gram");
}

std::tuple<std::vector<at::Tensor>, at::Tensor> combine_fallback(
    at::TensorList grads, const at::Tensor& weights, double gamma, int64_t mask) {
  combine_check(grads, weights, gamma, mask);
  no_kernel_for(grads[0], "cg2a::combine");
}

at::Tensor combine_out_fallback(at::TensorList grads, const at::Tensor& weights,
                                double gamma, int64_t mask, at::TensorList out) {
  combine_out_check(grads, weights, gamma, mask, out);
  no_kernel_for(grads[0], "cg2a::combine_out");
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
aggregate_fallback(at::TensorList grads, double gamma, bool gas, std::string_view mask,
                   std::string_view nonfinite) {
  aggregate_check(grads, gamma, gas, mask, nonfinite);
  no_kernel_for(grads[0], "cg2a::aggregate");
}

AggregateStats aggregate_out_fallback(at::TensorList grads, double gamma, bool gas,
                                      std::string_view mask, std::string_view nonfinite,
                                      at::TensorList out) {
  aggregate_out_check(grads, gamma, gas, mask, nonfinite, out);
  no_kernel_for(grads[0], "cg2a::aggregate_out");
}

}  // namespace

}  // namespace cg2a

TORCH_LIBRARY_IMPL(cg2a, CompositeExplicitAutograd, m) {
  m.impl("gram", &cg2a::gram_fallback);
  m.impl("combine", &cg2a::combine_fallback);
  m.impl("combine_out", &cg2a::combine_out_fallback);
  m.impl("aggregate", &cg2a::aggregate_fallback);
  m.impl("aggregate_out", &cg2a::aggregate_out_fallback);
}

TORCH_LIBRARY_IMPL(cg2a, CompositeImplicitAutograd, m) {
  m.impl("gram_check", &cg2a::gram_check);
  m.impl("combine_check", &cg2a::combine_check);
  m.impl("combine_out_check", &cg2a::combine_out_check);
  m.impl("aggregate_check", &cg2a::aggregate_check);
  m.impl("aggregate_out_check", &cg2a::aggregate_out_check);
}
