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

// The Gram matrix is accumulated in double for every input dtype: squares of
// float32 values overflow float (|x| > 1.8e19) long before their double
// squares could (a float32 Gram in double stays below 1e96 for any size), so
// finite float32/float16/bfloat16 inputs always give a finite Gram.
using gram_acc_t = double;

// Accumulation type of the combine pass: float64 inputs accumulate in double,
// everything else (float32, float16, bfloat16) in float.
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

// finite_probe += v_i * 0 for every i: stays exactly 0 while every value is
// finite and becomes NaN at the first Inf or NaN (Inf * 0 = NaN). Float64
// inputs need it: their double Gram can overflow although every input is
// finite, so a non-finite Gram alone cannot tell a non-finite input apart.
template <int K_STATIC, int LANES = 1, typename acc_type>
CG2A_HD void finite_probe_accumulate(const acc_type* v, int stride,
                                     int k_runtime, acc_type* probe) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
CG2A_UNROLL
  for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
    if (i >= k) break;
CG2A_LANES
    for (int l = 0; l < LANES; ++l) probe[l] += v[i * stride + l] * acc_type(0);
  }
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

// ------------------------------------------------------------- weights
// One aggregation's weights and status, formed from its double Gram matrix by
// the CPU kernels on the host and by one CUDA thread on the device (the same
// code, so the two backends agree bit for bit given the same Gram).

// x - x is 0 for finite x and NaN for Inf and NaN (no library call, so the
// same code runs on host and device; IEEE semantics are kept: no fast-math).
CG2A_HD bool is_finite(double x) { return x - x == 0.0; }
CG2A_HD double abs_value(double x) { return x < 0.0 ? -x : x; }

// w (K values, double): GAS (method doc, Eq. 8) w_i = r_i / sum_k |r_k| with
// r_i = sum_j G_ij, 1/K when every r_i is 0; or the mean 1/K (gas = false).
// Gram entries above 2^1000 are first multiplied by 2^-1000: exact in binary
// floating point and w is scale-invariant, so the row sums cannot overflow.
// Returns false (w unusable) when the Gram matrix is not finite.
CG2A_HD bool form_weights(const double* gram, int k, bool gas, double* w) {
  if (!gas) {
    for (int i = 0; i < k; ++i) w[i] = 1.0 / double(k);
    return true;
  }
  double largest = 0.0;
  bool finite = true;
  for (int p = 0; p < k * k; ++p) {
    const double a = abs_value(gram[p]);
    finite = finite && is_finite(a);
    largest = a > largest ? a : largest;
  }
  if (!finite) {
    for (int i = 0; i < k; ++i) w[i] = 0.0;
    return false;
  }
  const double scale = largest > 0x1p1000 ? 0x1p-1000 : 1.0;
  double denominator = 0.0;
  for (int i = 0; i < k; ++i) {
    double r = 0.0;
    for (int j = 0; j < k; ++j) r += gram[i * k + j] * scale;
    w[i] = r;
    denominator += abs_value(r);
  }
  for (int i = 0; i < k; ++i)
    w[i] = denominator > 0.0 ? w[i] / denominator : 1.0 / double(k);
  return true;
}

// What one aggregation found before its combine pass.
struct WeightDecision {
  bool nonfinite_input;  // some input value is Inf or NaN
  bool overflow;         // finite inputs, but the double Gram overflowed
};

// The weights the combine pass uses: form_weights, zeroed when the inputs
// are non-finite or the Gram overflowed (the combine pass then writes exact
// zeros). `probe` is the finite probe of float64 inputs (has_probe), whose
// Gram can overflow; for other dtypes a non-finite Gram means a non-finite
// input (see gram_acc_t).
CG2A_HD WeightDecision decide_weights(const double* gram, double probe,
                                      bool has_probe, int k, bool gas,
                                      double* w) {
  bool gram_finite = true;
  for (int p = 0; p < k * k; ++p) gram_finite = gram_finite && is_finite(gram[p]);
  WeightDecision d;
  d.nonfinite_input = has_probe ? !(probe == 0.0) : !gram_finite;
  const bool weights_ok = form_weights(gram, k, gas, w) && gram_finite;
  d.overflow = !d.nonfinite_input && !weights_ok;
  if (d.nonfinite_input || d.overflow)
    for (int i = 0; i < k; ++i) w[i] = 0.0;
  return d;
}

}  // namespace cg2a
