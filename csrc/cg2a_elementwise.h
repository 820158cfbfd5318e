// Per-element CG2A math, shared by the CPU kernels (cpu_kernels.cpp) and the
// CUDA kernels (cuda/cuda_kernels.cu) so the two paths cannot drift apart.
//
// Every function sees the K values of ONE parameter element, already
// converted to the accumulation type. `stride` is the distance between
// consecutive values in memory: the CPU kernel keeps a block of elements in
// lanes ([K][lanes], stride = lanes) so the compiler vectorises across lanes;
// the CUDA kernel keeps one element per thread (stride = 1).
//
// K_STATIC > 0 fixes K at compile time (loops fully unrolled); K_STATIC == 0
// means K is only known at run time (at most kMaxK).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CG2A_HD __host__ __device__ __forceinline__
#else
#define CG2A_HD inline
#endif

namespace cg2a {

// Largest K the fused kernels accept (register and stack budgets).
constexpr int kMaxK = 32;
// Largest K with a compile-time specialisation.
constexpr int kMaxStaticK = 8;

// How the agreement mask is computed (method doc, section 3).
enum MaskMode : int64_t {
  kMaskAgree = 0,     // all K strictly positive or all strictly negative
  kMaskPositive = 1,  // all K strictly positive (the paper's literal Eq. 9)
};

CG2A_HD constexpr int num_pairs(int k) { return k * (k + 1) / 2; }

// Accumulation type: float64 inputs accumulate in double, everything else
// (float32, float16, bfloat16) in float.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_t = typename AccType<scalar_t>::type;

// acc[p * stride] += v_i * v_j for the upper triangle (i <= j), row-major:
// pair p enumerates (0,0), (0,1) .. (0,K-1), (1,1), ...
template <int K_STATIC, typename acc_type>
CG2A_HD void gram_accumulate(const acc_type* v, int stride, int k_runtime,
                             acc_type* acc) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  int p = 0;
#pragma unroll
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
    const acc_type vi = v[i * stride];
#pragma unroll
    for (int j = i; j < (K_STATIC > 0 ? K_STATIC : kMaxK); ++j) {
      if (j >= k) break;
      acc[p * stride] += vi * v[j * stride];
      ++p;
    }
  }
}

// True when the K values agree in sign under `mode`. An exact zero never
// agrees (method doc, section 3).
template <int K_STATIC, typename acc_type>
CG2A_HD bool signs_agree(const acc_type* v, int stride, int k_runtime,
                         int64_t mode) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  bool all_positive = true;
  bool all_negative = true;
#pragma unroll
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
    const acc_type x = v[i * stride];
    all_positive = all_positive && (x > acc_type(0));
    all_negative = all_negative && (x < acc_type(0));
  }
  return mode == kMaskPositive ? all_positive : (all_positive || all_negative);
}

// g_bar = m * sum_i w_i v_i with m = 1 where the signs agree, gamma elsewhere
// (method doc, section 4). A zero weight skips its term, so an all-zero weight
// vector yields an exact zero even when a value is non-finite: that is how
// nonfinite="zero" clears the output without a host synchronisation.
// Sets *conflict when the signs do not agree.
template <int K_STATIC, typename acc_type>
CG2A_HD acc_type combine_value(const acc_type* v, int stride, int k_runtime,
                               const acc_type* weights, acc_type gamma,
                               int64_t mode, bool* conflict) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  acc_type sum = acc_type(0);
#pragma unroll
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
    const acc_type w = weights[i];
    sum += (w != acc_type(0)) ? w * v[i * stride] : acc_type(0);
  }
  const bool agree = signs_agree<K_STATIC>(v, stride, k, mode);
  *conflict = !agree;
  return agree ? sum : gamma * sum;
}

}  // namespace cg2a
