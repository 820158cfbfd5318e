// CPU kernels of the cg2a ops.
//
// Work is split into fixed chunks of at most kChunk elements, each inside one
// tensor; the split depends only on the tensor sizes, never on the thread
// count, and every chunk writes its own partial sums, which are added in chunk
// order. The Gram matrix is therefore bit-identical for a given input
// whatever the number of threads. Inside a chunk the per-element math of
// cg2a_elementwise.h is vectorised across elements: the Gram pass on vectors
// of doubles, the combine pass in an `omp simd` loop (which needs
// -fno-trapping-math, set by the build: with trapping math GCC keeps
// floating-point comparisons as branches and the loop scalar).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cg2a_dispatch.h"
#include "cg2a_elementwise.h"
#include "cg2a_ops.h"

namespace cg2a {
namespace {

constexpr int64_t kChunk = int64_t(1) << 15;

// The AVX2 clones below are compiled with a target attribute (only the
// functions marked, never the torch headers they include) and chosen at run
// time; every other x86-64 CPU runs the SSE2 baseline.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CG2A_HAVE_AVX2_CLONE 1
#define CG2A_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CG2A_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CG2A_HAVE_AVX2_CLONE 0
#define CG2A_TARGET_AVX2
#define CG2A_ALWAYS_INLINE inline
#endif

bool cpu_has_avx2() {
#if CG2A_HAVE_AVX2_CLONE
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

std::vector<Chunk> make_chunks(const std::vector<RowView>& views) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < views.size(); ++t) {
    for (int64_t b = 0; b < views[t].numel; b += kChunk) {
      chunks.push_back(Chunk{int64_t(t), b, std::min(b + kChunk, views[t].numel)});
    }
  }
  return chunks;
}

// Below this many elements in all, the passes run on the calling thread: the
// whole working set is in cache and waking the thread pool costs more than it
// saves (tens of microseconds on a loaded machine).
constexpr int64_t kParallelMinElements = int64_t(1) << 18;

template <typename Body>
void for_each_chunk(const std::vector<Chunk>& chunks, int64_t elements, Body body) {
  const int64_t n = int64_t(chunks.size());
  if (elements < kParallelMinElements) {
    body(0, n);
  } else {
    at::parallel_for(0, n, 1, body);
  }
}

// W adjacent doubles in one vector register (GCC and Clang vector extensions;
// other compilers get W = 1, plain doubles).
#if defined(__GNUC__)
#define CG2A_VECTOR_EXTENSIONS 1
template <int W>
struct DoubleLanes {
  typedef double type __attribute__((vector_size(W * sizeof(double))));
};
#else
#define CG2A_VECTOR_EXTENSIONS 0
template <int W>
struct DoubleLanes {
  static_assert(W == 1, "vector lanes need GCC or Clang");
  using type = double;
};
#endif

// Partial Gram (upper triangle, num_pairs(K) values) of one chunk, then its
// finite probe (float64 inputs; 0 otherwise): pairs + 1 doubles. Accumulated
// in double (gram_acc_t) element by element, so finite inputs of every dtype
// give a finite Gram. One accumulator register of W elements per pair: the
// header's gram_accumulate on vectors; a short last block is padded with
// zeros (which add nothing to the Gram or the probe).
template <int KS, int W, typename scalar_t>
CG2A_ALWAYS_INLINE void gram_chunk_impl(const RowView& view, const Chunk& c,
                                        int K, double* partial) {
  using lanes_t = typename DoubleLanes<W>::type;
  constexpr bool kProbe = std::is_same_v<scalar_t, double>;
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  const int k = KS > 0 ? KS : K;
  const int pairs = num_pairs(k);
  lanes_t v[kSlots];
  lanes_t acc[num_pairs(kSlots)];
  lanes_t probe[1] = {lanes_t{}};
  for (int p = 0; p < pairs; ++p) acc[p] = lanes_t{};

  const scalar_t* __restrict__ base = view.tensor.const_data_ptr<scalar_t>();
  const int64_t row_stride = view.row_stride;
  // Elements [e, e + count) of the K rows into v (count = W, a constant, in the main loop; fewer,
  // zero-padded, for a short last block), then into the Gram and the probe.
  auto accumulate = [&](int64_t e, auto count) {
    for (int i = 0; i < k; ++i) {
      const scalar_t* row = base + i * row_stride + e;
      if constexpr (W == 1) {
        v[i] = double(row[0]);
      } else {
        lanes_t x = {};
        for (int l = 0; l < int(count); ++l) x[l] = double(row[l]);
        v[i] = x;
      }
    }
    gram_accumulate<KS, 1>(v, 1, k, acc);
    if constexpr (kProbe) finite_probe_accumulate<KS, 1>(v, 1, k, probe);
  };
  int64_t e = c.begin;
  for (; e + W <= c.end; e += W) accumulate(e, std::integral_constant<int, W>{});
  if (e < c.end) accumulate(e, int(c.end - e));
  auto lane_sum = [](const lanes_t& x) {
    if constexpr (W == 1) {
      return double(x);
    } else {
      double s = 0.0;
      for (int l = 0; l < W; ++l) s += x[l];
      return s;
    }
  };
  for (int p = 0; p < pairs; ++p) partial[p] = lane_sum(acc[p]);
  partial[pairs] = lane_sum(probe[0]);
}

// Combines one chunk into `out` (contiguous, view.numel elements) and returns
// its number of conflicting elements. One `omp simd` loop over elements around
// the header's per-element math; kZeroOutput writes exact zeros (every weight
// zero) and still counts the conflicts.
template <int KS, bool kZeroOutput, typename scalar_t>
CG2A_ALWAYS_INLINE int64_t combine_chunk_loop(
    const RowView& view, const Chunk& c, int K, const acc_t<scalar_t>* weights,
    acc_t<scalar_t> gamma, int64_t mask, scalar_t* __restrict__ out) {
  using acc_type = acc_t<scalar_t>;
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  const int k = KS > 0 ? KS : K;
  acc_type w[kSlots];
  for (int i = 0; i < k; ++i) w[i] = weights[i];
  const AgreeThresholds<acc_type> thresholds = agree_thresholds<acc_type>(k, mask);
  const scalar_t* __restrict__ base = view.tensor.const_data_ptr<scalar_t>();
  const int64_t row_stride = view.row_stride;
  // Each lane's count is a whole number below kChunk < 2^24: exact in float.
  acc_type conflicts = acc_type(0);
#pragma omp simd reduction(+ : conflicts)
  for (int64_t e = c.begin; e < c.end; ++e) {
    acc_type sum = acc_type(0), positives = acc_type(0), negatives = acc_type(0);
    CG2A_UNROLL
    for (int i = 0; i < kSlots; ++i) {
      if (KS == 0 && i >= k) break;
      combine_accumulate(w[i], static_cast<acc_type>(base[i * row_stride + e]), sum,
                         positives, negatives);
    }
    acc_type disagree;
    const acc_type result =
        combine_finish(sum, positives, negatives, thresholds, gamma, disagree);
    conflicts += disagree;
    out[e] = static_cast<scalar_t>(kZeroOutput ? acc_type(0) : result);
  }
  return int64_t(conflicts);
}

template <int KS, typename scalar_t>
CG2A_ALWAYS_INLINE int64_t combine_chunk_impl(
    const RowView& view, const Chunk& c, int K, const acc_t<scalar_t>* weights,
    acc_t<scalar_t> gamma, int64_t mask, scalar_t* out) {
  return all_weights_zero(weights, K)
             ? combine_chunk_loop<KS, true>(view, c, K, weights, gamma, mask, out)
             : combine_chunk_loop<KS, false>(view, c, K, weights, gamma, mask, out);
}

// Doubles per vector register: 16 bytes (SSE2) or 32 bytes (AVX2).
constexpr int kBaselineGramLanes = CG2A_VECTOR_EXTENSIONS ? 2 : 1;
constexpr int kAvx2GramLanes = CG2A_VECTOR_EXTENSIONS ? 4 : 1;

template <int KS, typename scalar_t>
void gram_chunk_baseline(const RowView& view, const Chunk& c, int K, double* partial) {
  gram_chunk_impl<KS, kBaselineGramLanes, scalar_t>(view, c, K, partial);
}

template <int KS, typename scalar_t>
CG2A_TARGET_AVX2 void gram_chunk_avx2(const RowView& view, const Chunk& c, int K, double* partial) {
  gram_chunk_impl<KS, kAvx2GramLanes, scalar_t>(view, c, K, partial);
}

template <int KS, typename scalar_t>
int64_t combine_chunk_baseline(const RowView& view, const Chunk& c, int K,
                               const acc_t<scalar_t>* weights, acc_t<scalar_t> gamma,
                               int64_t mask, scalar_t* out) {
  return combine_chunk_impl<KS, scalar_t>(view, c, K, weights, gamma, mask, out);
}

template <int KS, typename scalar_t>
CG2A_TARGET_AVX2 int64_t combine_chunk_avx2(const RowView& view, const Chunk& c, int K,
                                            const acc_t<scalar_t>* weights,
                                            acc_t<scalar_t> gamma, int64_t mask,
                                            scalar_t* out) {
  return combine_chunk_impl<KS, scalar_t>(view, c, K, weights, gamma, mask, out);
}

int64_t total_elements(const std::vector<RowView>& views) {
  int64_t n = 0;
  for (const RowView& v : views) n += v.numel;
  return n;
}

// The Gram pass: the double Gram matrix (row-major K x K) and the finite
// probe (float64 inputs). Fixed-order reduction of the chunk partials, so
// the result does not depend on the thread count.
struct GramPass {
  std::vector<double> gram;
  double probe;
};

GramPass gram_pass(const std::vector<RowView>& views, const std::vector<Chunk>& chunks,
                   int64_t K, at::ScalarType dtype) {
  const int pairs = num_pairs(int(K));
  const int slots = pairs + 1;
  std::vector<double> partials(chunks.size() * slots, 0.0);
  const bool avx2 = cpu_has_avx2();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cg2a::gram", [&] {
    dispatch_k(K, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      for_each_chunk(chunks, total_elements(views), [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          const Chunk& chunk = chunks[c];
          double* partial = &partials[c * slots];
          if (avx2)
            gram_chunk_avx2<KS, scalar_t>(views[chunk.tensor], chunk, int(K), partial);
          else
            gram_chunk_baseline<KS, scalar_t>(views[chunk.tensor], chunk, int(K), partial);
        }
      });
    });
  });

  std::vector<double> upper(slots, 0.0);
  for (size_t c = 0; c < chunks.size(); ++c)
    for (int p = 0; p < slots; ++p) upper[p] += partials[c * slots + p];
  GramPass result{std::vector<double>(K * K), upper[pairs]};
  for (int64_t i = 0, p = 0; i < K; ++i)
    for (int64_t j = i; j < K; ++j, ++p)
      result.gram[i * K + j] = result.gram[j * K + i] = upper[p];
  return result;
}

// The combine pass into `targets` (contiguous, one per tensor); returns the
// number of conflicting elements.
int64_t combine_pass(const std::vector<RowView>& views, const std::vector<Chunk>& chunks,
                         int64_t K, const double* weights, double gamma, int64_t mask,
                         at::ScalarType dtype, std::vector<at::Tensor>& targets) {
  std::vector<int64_t> results(chunks.size());
  const bool avx2 = cpu_has_avx2();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cg2a::combine", [&] {
    using acc_type = acc_t<scalar_t>;
    std::array<acc_type, kMaxK> w_local{};
    for (int64_t i = 0; i < K; ++i) w_local[i] = static_cast<acc_type>(weights[i]);
    const acc_type gamma_acc = static_cast<acc_type>(gamma);
    dispatch_k(K, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      for_each_chunk(chunks, total_elements(views), [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          const Chunk& chunk = chunks[c];
          scalar_t* target = targets[chunk.tensor].mutable_data_ptr<scalar_t>();
          results[c] = avx2 ? combine_chunk_avx2<KS, scalar_t>(views[chunk.tensor], chunk, int(K),
                                                               w_local.data(), gamma_acc, mask, target)
                            : combine_chunk_baseline<KS, scalar_t>(views[chunk.tensor], chunk, int(K),
                                                                   w_local.data(), gamma_acc, mask, target);
        }
      });
    });
  });
  int64_t total = 0;
  for (int64_t r : results) total += r;
  return total;
}

// Largest finite value of a gradient dtype.
double largest_finite(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::numeric_limits<double>::max();
    case at::kFloat: return std::numeric_limits<float>::max();
    case at::kHalf: return 65504.0;
    default: return 3.3895313892515355e38;  // bfloat16
  }
}

// Whether a written value can have overflowed: |out_e| <= sum_i |w_i| |g_i[e]|
// <= sum_i |w_i| ||g_i|| (m <= 1), and ||g_i||^2 is the Gram diagonal. Only
// when that bound comes near the dtype's largest value are the outputs
// scanned (a rare third pass), which keeps the combine loop free of checks.
bool overflow_possible(const std::vector<double>& gram, const double* w, int64_t K,
                       at::ScalarType dtype) {
  double bound = 0.0;
  for (int64_t i = 0; i < K; ++i) bound += std::abs(w[i]) * std::sqrt(gram[i * K + i]);
  return !(bound < 0.5 * largest_finite(dtype));
}

bool any_nonfinite(const std::vector<at::Tensor>& targets) {
  for (const at::Tensor& t : targets)
    if (t.numel() > 0 && !at::isfinite(t).all().item<bool>()) return true;
  return false;
}

// A non-contiguous out tensor is written through a contiguous buffer.
std::vector<at::Tensor> contiguous_targets(at::TensorList out) {
  std::vector<at::Tensor> targets;
  targets.reserve(out.size());
  for (const at::Tensor& o : out)
    targets.push_back(o.is_contiguous() ? o : at::empty_like(o, at::MemoryFormat::Contiguous));
  return targets;
}

void copy_back(at::TensorList out, const std::vector<at::Tensor>& targets) {
  for (size_t t = 0; t < out.size(); ++t)
    if (!targets[t].is_same(out[t])) out[t].copy_(targets[t]);
}

at::Tensor gram_cpu(at::TensorList grads) {
  check_gram_inputs(grads, "cg2a::gram");
  const int64_t K = grads[0].size(0);
  const auto views = row_views(grads);
  const GramPass pass = gram_pass(views, make_chunks(views), K, grads[0].scalar_type());
  at::Tensor gram = at::empty({K, K}, at::TensorOptions().dtype(at::kDouble));
  std::copy(pass.gram.begin(), pass.gram.end(), gram.mutable_data_ptr<double>());
  return gram.to(accumulation_dtype(grads[0].scalar_type()));
}

at::Tensor combine_out_impl(at::TensorList grads, const at::Tensor& weights,
                            double gamma, int64_t mask, at::TensorList out,
                            const char* op) {
  check_combine_inputs(grads, weights, gamma, mask, out, op);
  check_no_overlap(out, grads, op);
  check_weight_values(weights, op);
  const int64_t K = grads[0].size(0);
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  auto targets = contiguous_targets(out);
  const at::Tensor w = weights.to(at::kDouble).contiguous();
  const int64_t conflicts = combine_pass(views, chunks, K, w.const_data_ptr<double>(), gamma,
                                         mask, grads[0].scalar_type(), targets);
  copy_back(out, targets);
  return at::scalar_tensor(conflicts, at::TensorOptions().dtype(at::kLong));
}

at::Tensor combine_out_cpu(at::TensorList grads, const at::Tensor& weights,
                           double gamma, int64_t mask, at::TensorList out) {
  return combine_out_impl(grads, weights, gamma, mask, out, "cg2a::combine_out");
}

std::tuple<std::vector<at::Tensor>, at::Tensor> combine_cpu(
    at::TensorList grads, const at::Tensor& weights, double gamma,
    int64_t mask) {
  return combine_into_new_outputs(
      grads, weights, gamma, mask,
      [](at::TensorList g, const at::Tensor& w, double gm, int64_t m, at::TensorList o) {
        return combine_out_impl(g, w, gm, m, o, "cg2a::combine");
      });
}

AggregateStats aggregate_out_impl(at::TensorList grads, double gamma, bool gas,
                                  std::string_view mask_name,
                                  std::string_view nonfinite_name, at::TensorList out,
                                  const char* op) {
  const AggregateOptions options =
      check_aggregate_inputs(grads, gamma, mask_name, nonfinite_name, out, op);
  check_no_overlap(out, grads, op);
  const int64_t K = grads[0].size(0);
  const auto dtype = grads[0].scalar_type();
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);

  const GramPass gram_result = gram_pass(views, chunks, K, dtype);
  at::Tensor gram = at::empty({K, K}, f64);
  std::copy(gram_result.gram.begin(), gram_result.gram.end(), gram.mutable_data_ptr<double>());
  at::Tensor weights = at::empty({K}, f64);
  double* w = weights.mutable_data_ptr<double>();
  const WeightDecision decision = decide_weights(
      gram_result.gram.data(), gram_result.probe, dtype == at::kDouble, int(K), gas, w);
  const bool raise = options.nonfinite == NonfinitePolicy::kRaise;
  if (raise && decision.nonfinite_input) raise_nonfinite_input(gram, op);
  if (raise && decision.overflow) raise_overflow(/*in_gram=*/true, dtype, op);

  auto targets = contiguous_targets(out);
  const int64_t conflicts =
      combine_pass(views, chunks, K, w, gamma, options.mask, dtype, targets);
  // An overflow of the output dtype is only known once every value has been
  // written: zero the output then.
  const bool output_overflow = !decision.nonfinite_input && !decision.overflow &&
                               overflow_possible(gram_result.gram, w, K, dtype) &&
                               any_nonfinite(targets);
  if (output_overflow)
    for (at::Tensor& t : targets) t.zero_();
  copy_back(out, targets);
  if (raise && output_overflow) raise_overflow(/*in_gram=*/false, dtype, op);

  const int64_t elements = total_elements(views);
  at::Tensor fraction = at::scalar_tensor(double(conflicts) / double(std::max<int64_t>(elements, 1)), f64);
  at::Tensor flags = at::empty({2}, at::TensorOptions().dtype(at::kBool));
  flags.mutable_data_ptr<bool>()[0] = decision.nonfinite_input;
  flags.mutable_data_ptr<bool>()[1] = decision.overflow || output_overflow;
  return {gram, weights, fraction, flags};
}

AggregateStats aggregate_out_cpu(at::TensorList grads, double gamma, bool gas,
                                 std::string_view mask, std::string_view nonfinite,
                                 at::TensorList out) {
  return aggregate_out_impl(grads, gamma, gas, mask, nonfinite, out, "cg2a::aggregate_out");
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
aggregate_cpu(at::TensorList grads, double gamma, bool gas, std::string_view mask,
              std::string_view nonfinite) {
  return aggregate_into_new_outputs(
      grads, gamma, gas, mask, nonfinite,
      [](at::TensorList g, double gm, bool gs, std::string_view m, std::string_view n,
         at::TensorList o) { return aggregate_out_impl(g, gm, gs, m, n, o, "cg2a::aggregate"); });
}

}  // namespace

TORCH_LIBRARY_IMPL(cg2a, CPU, m) {
  m.impl("gram", &gram_cpu);
  m.impl("combine", &combine_cpu);
  m.impl("combine_out", &combine_out_cpu);
  m.impl("aggregate", &aggregate_cpu);
  m.impl("aggregate_out", &aggregate_out_cpu);
}

}  // namespace cg2a
