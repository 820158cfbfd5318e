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
#define CG2A_UNROLL _Pragma("unroll")
#define CG2A_LANES _Pragma("unroll")
#else
#define CG2A_HD inline
#define CG2A_UNROLL _Pragma("GCC unroll 32")
// Lane loops are data-parallel by construction; `omp simd` (honoured with
// -fopenmp or -fopenmp-simd) makes GCC vectorise them, selects included.
#define CG2A_LANES _Pragma("omp simd")
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

// The functions below work on LANES adjacent elements at once: value i of
// lane l is v[i * stride + l] (stride >= LANES). The lane loop is innermost so
// the CPU kernel vectorises it; the CUDA kernel uses LANES = 1, stride = 1.

// acc[p * stride + l] += v_i * v_j for the upper triangle (i <= j),
// row-major: pair p enumerates (0,0), (0,1) .. (0,K-1), (1,1), ...
template <int K_STATIC, int LANES = 1, typename acc_type>
CG2A_HD void gram_accumulate(const acc_type* v, int stride, int k_runtime,
                             acc_type* acc) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  int p = 0;
CG2A_UNROLL
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
CG2A_UNROLL
    for (int j = i; j < (K_STATIC > 0 ? K_STATIC : kMaxK); ++j) {
      if (j >= k) break;
CG2A_LANES
      for (int l = 0; l < LANES; ++l)
        acc[p * stride + l] += v[i * stride + l] * v[j * stride + l];
      ++p;
    }
  }
}

// g_bar = m * sum_i w_i v_i with m = 1 where the K signs agree, gamma
// elsewhere (method doc, sections 3-4). Agreement: all K strictly positive,
// or (mode kMaskAgree) all strictly negative; an exact zero never agrees.
// Writes result[l] and conflict[l] (1 where the signs do not agree, else 0;
// in acc_type so that every lane operation is a floating-point one and the
// CPU kernel vectorises the whole function without branches).
// The kernels write exact zeros instead of result when every weight is zero
// (see all_weights_zero): that is how nonfinite="zero" clears the output,
// without a host synchronisation, even where a value is non-finite.
template <int K_STATIC, int LANES, typename acc_type>
CG2A_HD void combine_lanes(const acc_type* v, int stride, int k_runtime,
                           const acc_type* weights, acc_type gamma,
                           int64_t mode, acc_type* result, acc_type* conflict) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  // Counts of strictly positive and strictly negative values; the signs
  // agree when either count is K. Comparisons turned into 0/1 numbers and
  // arithmetic (no selects) keep every lane operation vectorisable.
  acc_type sum[LANES];
  acc_type positives[LANES];
  acc_type negatives[LANES];
  CG2A_LANES
  for (int l = 0; l < LANES; ++l) {
    sum[l] = acc_type(0);
    positives[l] = acc_type(0);
    negatives[l] = acc_type(0);
  }
  CG2A_UNROLL
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
    const acc_type w = weights[i];
    CG2A_LANES
    for (int l = 0; l < LANES; ++l) {
      const acc_type x = v[i * stride + l];
      sum[l] += w * x;
      positives[l] += acc_type(x > acc_type(0));
      negatives[l] += acc_type(x < acc_type(0));
    }
  }
  // "count == K" written as "count > K - 1/2" (counts are whole numbers;
  // GCC turns a floating-point == into a branch, > into a vector compare).
  // Under kMaskPositive no negative count can pass its threshold.
  const acc_type all_positive = acc_type(k) - acc_type(0.5);
  const acc_type all_negative =
      mode == kMaskPositive ? acc_type(k) + acc_type(1) : all_positive;
  CG2A_LANES
  for (int l = 0; l < LANES; ++l) {
    // Both counts cannot pass at once, so agree is 0 or 1, and the blend is
    // exact: sum where agree = 1, gamma * sum where agree = 0.
    const acc_type agree = acc_type(positives[l] > all_positive) +
                           acc_type(negatives[l] > all_negative);
    const acc_type disagree = acc_type(1) - agree;
    conflict[l] = disagree;
    sum[l] = agree * sum[l] + disagree * (gamma * sum[l]);
  }
  CG2A_LANES
  for (int l = 0; l < LANES; ++l) result[l] = sum[l];
}

// True when every weight is zero: the kernels then write exact zeros.
template <typename acc_type>
CG2A_HD bool all_weights_zero(const acc_type* weights, int k) {
  bool zero = true;
  for (int i = 0; i < k; ++i) zero = zero && (weights[i] == acc_type(0));
  return zero;
}

// One element (LANES = 1): returns g_bar and sets *conflict.
template <int K_STATIC, typename acc_type>
CG2A_HD acc_type combine_value(const acc_type* v, int stride, int k_runtime,
                               const acc_type* weights, acc_type gamma,
                               int64_t mode, bool* conflict) {
  acc_type result;
  acc_type conflicting;
  combine_lanes<K_STATIC, 1>(v, stride, k_runtime, weights, gamma, mode,
                             &result, &conflicting);
  *conflict = conflicting != acc_type(0);
  return result;
}

}  // namespace cg2a
