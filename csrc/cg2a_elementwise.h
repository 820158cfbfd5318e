// Per-element CG2A math, shared by the CPU kernels (cpu_kernels.cpp) and the
// CUDA kernels (cuda/cuda_kernels.cu) so the two paths cannot drift apart.
//
// Every function sees the K values of ONE parameter element (or of one
// vector register of elements), already converted to the accumulation type.
// The CPU kernels vectorise across elements: the Gram pass with acc_type a
// vector of doubles, the combine pass with an `omp simd` loop over elements
// around the scalar functions; the CUDA kernels keep one element per thread.
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
// lane l is v[i * stride + l] (stride >= LANES). The CPU Gram pass uses
// LANES = 1 with acc_type a vector of doubles (one register of elements);
// the CUDA kernel uses LANES = 1, stride = 1, with plain scalars.

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
//
// The math is written for one element, in scalars passed by value or
// reference, so that a CPU loop over elements (`omp simd`) vectorises it
// whole: no arrays, no branches. Comparisons become 0/1 numbers and the mask
// a blend (a floating-point == or a select would become a branch).
//
// Thresholds of the sign counts: the signs agree when a count is K, written
// "count > K - 1/2" (counts are whole numbers). Under kMaskPositive no
// negative count can pass its threshold.
template <typename acc_type>
struct AgreeThresholds {
  acc_type positive;
  acc_type negative;
};

template <typename acc_type>
CG2A_HD AgreeThresholds<acc_type> agree_thresholds(int k, int64_t mode) {
  const acc_type all = acc_type(k) - acc_type(0.5);
  return {all, mode == kMaskPositive ? acc_type(k) + acc_type(1) : all};
}

// Adds value x (weight w) of one element: its weighted sum and its counts of
// strictly positive and strictly negative values.
template <typename acc_type>
CG2A_HD void combine_accumulate(acc_type w, acc_type x, acc_type& sum,
                                acc_type& positives, acc_type& negatives) {
  sum += w * x;
  positives += acc_type(x > acc_type(0));
  negatives += acc_type(x < acc_type(0));
}

// The element's g_bar from its sum and counts; sets disagree to 1 where the
// signs do not agree, else 0 (in acc_type, so counting conflicts is
// floating-point too). Both counts cannot pass at once, so agree is 0 or 1
// and the blend is exact: sum where agree = 1, gamma * sum where agree = 0.
template <typename acc_type>
CG2A_HD acc_type combine_finish(acc_type sum, acc_type positives, acc_type negatives,
                                AgreeThresholds<acc_type> thresholds, acc_type gamma,
                                acc_type& disagree) {
  const acc_type agree = acc_type(positives > thresholds.positive) +
                         acc_type(negatives > thresholds.negative);
  disagree = acc_type(1) - agree;
  return agree * sum + disagree * (gamma * sum);
}

// The same for LANES adjacent elements kept side by side (value i of lane l
// at v[i * stride + l]): writes result[l] and conflict[l]. The CUDA kernels
// use it with LANES = 1.
// The kernels write exact zeros instead of result when every weight is zero
// (see all_weights_zero): that is how nonfinite="zero" clears the output,
// without a host synchronisation, even where a value is non-finite.
template <int K_STATIC, int LANES, typename acc_type>
CG2A_HD void combine_lanes(const acc_type* v, int stride, int k_runtime,
                           const acc_type* weights, acc_type gamma,
                           int64_t mode, acc_type* result, acc_type* conflict) {
  const int k = K_STATIC > 0 ? K_STATIC : k_runtime;
  const AgreeThresholds<acc_type> thresholds = agree_thresholds<acc_type>(k, mode);
  CG2A_LANES
  for (int l = 0; l < LANES; ++l) {
    acc_type sum = acc_type(0), positives = acc_type(0), negatives = acc_type(0);
    CG2A_UNROLL
    for (int i = 0; i < (K_STATIC > 0 ? K_STATIC : kMaxK); ++i) {
      if (i >= k) break;
      combine_accumulate(weights[i], v[i * stride + l], sum, positives, negatives);
    }
    result[l] = combine_finish(sum, positives, negatives, thresholds, gamma, conflict[l]);
  }
}

// finite_probe += v_i * 0 for every i: stays exactly 0 while every value is
// finite and becomes NaN at the first Inf or NaN (Inf * 0 = NaN). The zero is
// written acc_type{} so that acc_type may be a CPU vector of doubles. Float64
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
    for (int l = 0; l < LANES; ++l) probe[l] += v[i * stride + l] * acc_type{};
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
