// CPU kernels of the cg2a ops.
//
// Work is split into fixed chunks of at most kChunk elements, each inside one
// tensor; the split depends only on the tensor sizes, never on the thread
// count, and every chunk writes its own partial sums, which are added in chunk
// order. The Gram matrix is therefore bit-identical for a given input
// whatever the number of threads. Inside a chunk, one vector register's worth
// of elements is kept side by side ([K][LANES]) so the per-element math of
// cg2a_elementwise.h vectorises across lanes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
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

// Loads elements [e, e + count) of the K rows into lanes ([K][LANES]), as
// acc_type; lanes past `count` are zero (they add nothing to the Gram).
template <int KS, int LANES, typename scalar_t, typename acc_type>
CG2A_ALWAYS_INLINE void load_lanes(const scalar_t* base, int64_t row_stride,
                                   int K, int64_t e, int count, acc_type* v) {
  const int k = KS > 0 ? KS : K;
  for (int i = 0; i < k; ++i) {
    const scalar_t* row = base + i * row_stride + e;
    acc_type* lane = v + i * LANES;
    if (count == LANES) {
      for (int l = 0; l < LANES; ++l) lane[l] = static_cast<acc_type>(row[l]);
    } else {
      for (int l = 0; l < LANES; ++l)
        lane[l] = l < count ? static_cast<acc_type>(row[l]) : acc_type(0);
    }
  }
}

// Partial Gram (upper triangle, num_pairs(K) values) of one chunk, in double.
// LANES is one vector register's worth, so that for K <= 4 the accumulators
// stay in registers.
template <int KS, int LANES, typename scalar_t>
CG2A_ALWAYS_INLINE void gram_chunk_impl(const RowView& view, const Chunk& c,
                                        int K, double* partial) {
  using acc_type = acc_t<scalar_t>;
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  const int pairs = num_pairs(K);
  alignas(64) acc_type v[kSlots * LANES];
  alignas(64) acc_type acc[num_pairs(kSlots) * LANES];
  for (int p = 0; p < pairs * LANES; ++p) acc[p] = acc_type(0);

  const scalar_t* base = view.tensor.const_data_ptr<scalar_t>();
  for (int64_t e = c.begin; e < c.end; e += LANES) {
    const int count = int(std::min<int64_t>(LANES, c.end - e));
    load_lanes<KS, LANES>(base, view.row_stride, K, e, count, v);
    gram_accumulate<KS, LANES>(v, LANES, K, acc);
  }
  for (int p = 0; p < pairs; ++p) {
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += double(acc[p * LANES + l]);
    partial[p] = s;
  }
}

// Combines one chunk into `out` (contiguous, view.numel elements) and returns
// its number of conflicting elements.
template <int KS, int LANES, typename scalar_t>
CG2A_ALWAYS_INLINE int64_t combine_chunk_impl(const RowView& view,
                                              const Chunk& c, int K,
                                              const acc_t<scalar_t>* weights,
                                              acc_t<scalar_t> gamma,
                                              int64_t mask,
                                              scalar_t* __restrict__ out) {
  using acc_type = acc_t<scalar_t>;
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  alignas(64) acc_type v[kSlots * LANES];
  alignas(64) acc_type result[LANES];
  alignas(64) acc_type conflict[LANES];
  // Per-lane counts, each exactly 0 or 1 per element: exact in acc_type up
  // to 2^24 > kChunk.
  alignas(64) acc_type conflicts[LANES] = {};
  const bool zero_output = all_weights_zero(weights, K);

  const scalar_t* __restrict__ base = view.tensor.const_data_ptr<scalar_t>();
  for (int64_t e = c.begin; e < c.end; e += LANES) {
    const int count = int(std::min<int64_t>(LANES, c.end - e));
    load_lanes<KS, LANES>(base, view.row_stride, K, e, count, v);
    combine_lanes<KS, LANES>(v, LANES, K, weights, gamma, mask, result,
                             conflict);
    if (count == LANES) {
      CG2A_LANES
      for (int l = 0; l < LANES; ++l) {
        out[e + l] = static_cast<scalar_t>(zero_output ? acc_type(0) : result[l]);
        conflicts[l] += conflict[l];
      }
    } else {
      for (int l = 0; l < count; ++l) {
        out[e + l] = static_cast<scalar_t>(zero_output ? acc_type(0) : result[l]);
        conflicts[l] += conflict[l];
      }
    }
  }
  double total = 0.0;
  for (int l = 0; l < LANES; ++l) total += double(conflicts[l]);
  return int64_t(total);
}

// Lanes per vector register: 16 bytes (SSE2) or 32 bytes (AVX2).
template <typename scalar_t, int kBytes>
constexpr int lanes = kBytes / int(sizeof(acc_t<scalar_t>));

template <int KS, typename scalar_t>
void gram_chunk_baseline(const RowView& view, const Chunk& c, int K, double* partial) {
  gram_chunk_impl<KS, lanes<scalar_t, 16>, scalar_t>(view, c, K, partial);
}

template <int KS, typename scalar_t>
CG2A_TARGET_AVX2 void gram_chunk_avx2(const RowView& view, const Chunk& c, int K, double* partial) {
  gram_chunk_impl<KS, lanes<scalar_t, 32>, scalar_t>(view, c, K, partial);
}

template <int KS, typename scalar_t>
int64_t combine_chunk_baseline(const RowView& view, const Chunk& c, int K, const acc_t<scalar_t>* weights,
                               acc_t<scalar_t> gamma, int64_t mask, scalar_t* out) {
  return combine_chunk_impl<KS, lanes<scalar_t, 16>, scalar_t>(view, c, K, weights, gamma, mask, out);
}

template <int KS, typename scalar_t>
CG2A_TARGET_AVX2 int64_t combine_chunk_avx2(const RowView& view, const Chunk& c, int K,
                                            const acc_t<scalar_t>* weights, acc_t<scalar_t> gamma,
                                            int64_t mask, scalar_t* out) {
  return combine_chunk_impl<KS, lanes<scalar_t, 32>, scalar_t>(view, c, K, weights, gamma, mask, out);
}

at::Tensor gram_cpu(at::TensorList grads) {
  const int64_t K = check_grads(grads, "cg2a::gram");
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  const int pairs = num_pairs(int(K));
  std::vector<double> partials(chunks.size() * pairs, 0.0);
  const bool avx2 = cpu_has_avx2();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads[0].scalar_type(), "cg2a::gram", [&] {
        dispatch_k(K, [&](auto ks) {
          constexpr int KS = decltype(ks)::value;
          at::parallel_for(0, int64_t(chunks.size()), 1,
                           [&](int64_t begin, int64_t end) {
                             for (int64_t c = begin; c < end; ++c) {
                               const Chunk& chunk = chunks[c];
                               if (avx2)
                                 gram_chunk_avx2<KS, scalar_t>(views[chunk.tensor], chunk,
                                                               int(K), &partials[c * pairs]);
                               else
                                 gram_chunk_baseline<KS, scalar_t>(views[chunk.tensor], chunk,
                                                                   int(K), &partials[c * pairs]);
                             }
                           });
        });
      });

  // Fixed-order reduction of the chunk partials: deterministic.
  std::vector<double> upper(pairs, 0.0);
  for (size_t c = 0; c < chunks.size(); ++c)
    for (int p = 0; p < pairs; ++p) upper[p] += partials[c * pairs + p];

  at::Tensor gram = at::empty({K, K}, at::TensorOptions().dtype(at::kDouble));
  double* g = gram.data_ptr<double>();
  for (int64_t i = 0, p = 0; i < K; ++i)
    for (int64_t j = i; j < K; ++j, ++p) g[i * K + j] = g[j * K + i] = upper[p];
  return gram.to(accumulation_dtype(grads[0].scalar_type()));
}

at::Tensor combine_out_cpu(at::TensorList grads, const at::Tensor& weights,
                           double gamma, int64_t mask, at::TensorList out) {
  const int64_t K = check_grads(grads, "cg2a::combine_out");
  check_weights(weights, grads, "cg2a::combine_out");
  check_out(out, grads, "cg2a::combine_out");
  check_mask(mask, "cg2a::combine_out");
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  // A non-contiguous out tensor is written through a contiguous buffer.
  std::vector<at::Tensor> targets;
  targets.reserve(out.size());
  for (const at::Tensor& o : out)
    targets.push_back(o.is_contiguous() ? o : at::empty_like(o, at::MemoryFormat::Contiguous));
  std::vector<int64_t> conflicts(chunks.size(), 0);
  const bool avx2 = cpu_has_avx2();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads[0].scalar_type(), "cg2a::combine", [&] {
        using acc_type = acc_t<scalar_t>;
        const at::Tensor w = weights.contiguous();
        std::array<acc_type, kMaxK> w_local{};
        for (int64_t i = 0; i < K; ++i) w_local[i] = w.const_data_ptr<acc_type>()[i];
        const acc_type gamma_acc = static_cast<acc_type>(gamma);
        dispatch_k(K, [&](auto ks) {
          constexpr int KS = decltype(ks)::value;
          at::parallel_for(
              0, int64_t(chunks.size()), 1, [&](int64_t begin, int64_t end) {
                for (int64_t c = begin; c < end; ++c) {
                  const Chunk& chunk = chunks[c];
                  scalar_t* target = targets[chunk.tensor].mutable_data_ptr<scalar_t>();
                  conflicts[c] =
                      avx2 ? combine_chunk_avx2<KS, scalar_t>(views[chunk.tensor], chunk, int(K),
                                                              w_local.data(), gamma_acc, mask, target)
                           : combine_chunk_baseline<KS, scalar_t>(views[chunk.tensor], chunk, int(K),
                                                                  w_local.data(), gamma_acc, mask, target);
                }
              });
        });
      });

  for (size_t t = 0; t < out.size(); ++t)
    if (!targets[t].is_same(out[t])) out[t].copy_(targets[t]);
  int64_t total = 0;
  for (int64_t c : conflicts) total += c;
  return at::scalar_tensor(total, at::TensorOptions().dtype(at::kLong));
}

std::tuple<std::vector<at::Tensor>, at::Tensor> combine_cpu(
    at::TensorList grads, const at::Tensor& weights, double gamma,
    int64_t mask) {
  return combine_into_new_outputs(grads, weights, gamma, mask, &combine_out_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(cg2a, CPU, m) {
  m.impl("gram", &gram_cpu);
  m.impl("combine", &combine_cpu);
  m.impl("combine_out", &combine_out_cpu);
}

}  // namespace cg2a
