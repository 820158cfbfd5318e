// CUDA kernels of the cg2a ops.
//
// Multi-tensor launches in the style of PyTorch's _foreach / fused Adam and
// apex's multi_tensor_apply: all stacked gradients of one call are processed
// by ONE launch per pass (Gram, combine) plus a tiny final reduction kernel.
//
// `aggregate` runs the whole aggregation in five launches sharing ONE
// metadata upload: Gram partials, Gram finalize (+ the finite probe), weights
// (one thread: the same decide_weights as the CPU backend), combine, and an
// epilogue (conflict fraction; zeroes the output if a written value
// overflowed). Nothing is read back except, with nonfinite="raise", one
// 16-byte report (the one host synchronisation).
//
// Work split. Every tensor is cut into fixed chunks of kChunk elements (the
// last one shorter), each inside one tensor; the split depends only on the
// tensor sizes. One block processes one chunk at a time (grid-stride over
// chunks). A per-launch metadata table (per tensor: row-0 pointer, row
// stride, numel, out pointer, vector flag; per chunk: tensor, begin, end) is
// built on the host in a pinned buffer and copied to the device with a
// non-blocking copy on the current stream: no host synchronisation, and the
// caching host allocator records an event on the pinned block so it is not
// reused before the copy has run.
//
// Determinism. The Gram kernel keeps num_pairs(K) partial sums per thread,
// reduces them per chunk in a fixed tree (warp shuffles, then the warps in
// order through shared memory, in double) and writes one row of a
// [n_chunks, pairs] partials buffer; a second kernel adds the rows in a fixed
// order (in double). No float atomics, so the result is bit-identical for a
// given input and device whatever the scheduling. Conflict counts are
// integers, so their per-block partials sum exactly in any order.
//
// Chunk and block size. kChunk = 8192 elements and 256 threads: 32 elements
// per thread per chunk (8 float4 / 4 half8 / 16 double2 vector slots), enough
// to amortise the per-chunk reduction (pairs * 5 shuffles) while giving a few
// hundred blocks for a few-million-parameter critic, so every SM holds several
// blocks. With K <= 8 the K row vectors (16 bytes each), K converted values
// and up to 36 double accumulators stay in registers without spills (ptxas
// with nvcc 13, sm_90: 69 registers at K = 4 and 154 at K = 8 for the float32
// Gram, which accumulates in double; at most 64 for the combine), so at
// least one block of 256 threads fits per SM at K = 8 and three at K = 4.
//
// Run-time K (9..32, KS = 0): 528 accumulators cannot live in registers, so
// the per-thread accumulator array sits in local memory (L1/L2 cached), loads
// are scalar and blocks are 128 threads (combine too: its 32 values per
// element take over 100 registers, so smaller blocks keep more resident; its
// weights sit in shared memory; in float64 it still spills a few values).
// The driver reserves the accumulators' local memory for every resident
// thread slot (2 KiB per thread in float, 4 KiB in double). That path is
// several times slower than the memory bound; it exists for correctness (the
// method's default is K = 4).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../cg2a_dispatch.h"
#include "../cg2a_elementwise.h"
#include "../cg2a_ops.h"

namespace cg2a {
namespace {

constexpr int64_t kChunk = 8192;
constexpr int kThreads = 256;           // static K (1..8) and the reductions
constexpr int kThreadsRuntimeK = 128;   // KS = 0: register-heavy kernels
constexpr int kWarpSize = 32;
constexpr int kVecBytes = 16;
// Grid cap: blocks grid-stride over chunks, so any cap is correct; this one
// is far above what a GPU holds resident and well inside gridDim.x limits.
constexpr int64_t kMaxBlocks = 65536;

static_assert(kThreadsRuntimeK >= kMaxK, "one thread per weight (KS = 0)");
static_assert(kChunk % (kVecBytes / 2) == 0,
              "chunk starts must stay 16-byte aligned for every dtype");

// TensorMeta::vec bits: 16-byte vector accesses are legal for the input rows
// (kVecIn) and for the output (kVecOut). The Gram pass needs kVecIn, the
// combine pass both.
constexpr int64_t kVecIn = 1;
constexpr int64_t kVecOut = 2;
constexpr int64_t kVecInOut = kVecIn | kVecOut;

// Per-tensor metadata (all 8-byte fields: the same layout on host and device).
struct TensorMeta {
  const void* in;      // row 0 of the stacked gradient
  void* out;           // contiguous output of numel elements (combine only)
  int64_t row_stride;  // elements between row k and row k + 1
  int64_t numel;       // elements per row
  int64_t vec;         // kVecIn | kVecOut bits
};

struct ChunkMeta {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

// 16 bytes of consecutive elements; the alignment makes one load/store
// instruction move the whole vector.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T val[N];
};

template <int KS>
constexpr int threads_for() {
  return KS > 0 ? kThreads : kThreadsRuntimeK;
}

// Elements per vector slot: 16 bytes for static K; 1 for run-time K, whose
// K x 16-byte row vectors would not fit in registers.
template <int KS, typename scalar_t>
constexpr int vec_for() {
  return KS > 0 ? int(kVecBytes / sizeof(scalar_t)) : 1;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;  // complete in lane 0
}

// Sum over the block in a fixed order: shuffles within each warp, then the
// warps in index order. `red` holds one value per warp. Returns the sum in
// thread 0. Every thread of the block must call it.
template <int kT, typename T>
__device__ __forceinline__ T block_sum(T x, T* red) {
  constexpr int kWarps = kT / kWarpSize;
  x = warp_sum(x);
  if (threadIdx.x % kWarpSize == 0) red[threadIdx.x / kWarpSize] = x;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += red[w];
  }
  return total;
}

// Loads the K row vectors of slot e (elements [e, e + VEC)).
template <int KS, int VEC, typename scalar_t>
__device__ __forceinline__ void load_rows(const scalar_t* in,
                                          int64_t row_stride, int k,
                                          int64_t e,
                                          Vec<scalar_t, VEC>* raw) {
#pragma unroll
  for (int i = 0; i < (KS > 0 ? KS : kMaxK); ++i) {
    if (i >= k) break;
    raw[i] = *reinterpret_cast<const Vec<scalar_t, VEC>*>(
        in + int64_t(i) * row_stride + e);
  }
}

// The K values of lane l of a slot, converted to the accumulation type.
template <int KS, int VEC, typename scalar_t, typename acc_type>
__device__ __forceinline__ void unpack(const Vec<scalar_t, VEC>* raw, int l,
                                       int k, acc_type* v) {
#pragma unroll
  for (int i = 0; i < (KS > 0 ? KS : kMaxK); ++i) {
    if (i >= k) break;
    v[i] = static_cast<acc_type>(raw[i].val[l]);
  }
}

// The K values of element e, scalar loads (tails and unaligned tensors).
template <int KS, typename scalar_t, typename acc_type>
__device__ __forceinline__ void load_element(const scalar_t* in,
                                             int64_t row_stride, int k,
                                             int64_t e, acc_type* v) {
#pragma unroll
  for (int i = 0; i < (KS > 0 ? KS : kMaxK); ++i) {
    if (i >= k) break;
    v[i] = static_cast<acc_type>(in[int64_t(i) * row_stride + e]);
  }
}

// Pass 1: per-chunk partial Gram (upper triangle, then the finite probe of
// float64 inputs, 0 otherwise) into partials[c, 0 .. pairs]: pairs + 1
// doubles per chunk. Accumulated in double (gram_acc_t) for every dtype.
template <int KS, typename scalar_t>
__global__ void __launch_bounds__(threads_for<KS>())
    gram_partials_kernel(const TensorMeta* __restrict__ tensors,
                         const ChunkMeta* __restrict__ chunks,
                         int64_t n_chunks, int k_runtime,
                         double* __restrict__ partials) {
  using acc_type = gram_acc_t;
  constexpr bool kProbe = std::is_same_v<scalar_t, double>;
  constexpr int kT = threads_for<KS>();
  constexpr int kWarps = kT / kWarpSize;
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  constexpr int kPairSlots = num_pairs(kSlots);
  constexpr int VEC = vec_for<KS, scalar_t>();
  using VecT = Vec<scalar_t, VEC>;
  const int k = KS > 0 ? KS : k_runtime;
  const int pairs = num_pairs(k);
  const int slots = pairs + 1;  // the pairs, then the finite probe
  // Full unrolling keeps the static-K accumulators in registers; for run-time
  // K they are in local memory anyway, so the pair loops stay rolled there.
  constexpr int kUnrollPairs = KS > 0 ? kPairSlots : 1;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  __shared__ double red[kWarps][kPairSlots + 1];

  for (int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
    const ChunkMeta chunk = chunks[c];
    const TensorMeta t = tensors[chunk.tensor];
    const scalar_t* in = static_cast<const scalar_t*>(t.in);
    // Pointers read from the table are not provably global: without this the
    // compiler emits generic LD/ST instead of LDG/STG.
    __builtin_assume(__isGlobal(in));

    acc_type acc[kPairSlots];
#pragma unroll kUnrollPairs
    for (int p = 0; p < kPairSlots; ++p) {
      if (p >= pairs) break;
      acc[p] = acc_type(0);
    }
    acc_type probe = acc_type(0);

    // Vector slots (chunk.begin is a multiple of VEC, so they stay aligned),
    // then the scalar rest: the tail, or the whole chunk when unaligned.
    const int64_t n_vec = (t.vec & kVecIn) ? (chunk.end - chunk.begin) / VEC : 0;
    for (int64_t q = threadIdx.x; q < n_vec; q += kT) {
      VecT raw[kSlots];
      load_rows<KS>(in, t.row_stride, k, chunk.begin + q * VEC, raw);
#pragma unroll
      for (int l = 0; l < VEC; ++l) {
        acc_type v[kSlots];
        unpack<KS>(raw, l, k, v);
        gram_accumulate<KS>(v, 1, k, acc);
        if constexpr (kProbe) finite_probe_accumulate<KS>(v, 1, k, &probe);
      }
    }
    for (int64_t e = chunk.begin + n_vec * VEC + threadIdx.x; e < chunk.end;
         e += kT) {
      acc_type v[kSlots];
      load_element<KS>(in, t.row_stride, k, e, v);
      gram_accumulate<KS>(v, 1, k, acc);
      if constexpr (kProbe) finite_probe_accumulate<KS>(v, 1, k, &probe);
    }

    // Fixed-order block reduction of every pair and the probe, in double.
#pragma unroll kUnrollPairs
    for (int p = 0; p < kPairSlots; ++p) {
      if (p >= pairs) break;
      const double s = warp_sum(static_cast<double>(acc[p]));
      if (lane == 0) red[warp][p] = s;
    }
    {
      const double s = warp_sum(static_cast<double>(probe));
      if (lane == 0) red[warp][pairs] = s;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < slots; p += kT) {
      double s = 0.0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += red[w][p];
      partials[c * slots + p] = s;
    }
    __syncthreads();  // `red` is reused by the next chunk
  }
}

// Pass 1b: G = sum over chunks of the partials (one block per slot, fixed
// order), mirrored into [K, K] in out_t (the accumulation dtype for `gram`,
// double for `aggregate`). Launched with `pairs` blocks, or `pairs + 1` to
// also sum the finite probe into *probe.
template <typename out_t>
__global__ void __launch_bounds__(kThreads)
    gram_finalize_kernel(const double* __restrict__ partials,
                         int64_t n_chunks, int k,
                         out_t* __restrict__ gram,
                         double* __restrict__ probe) {
  __shared__ double red[kThreads / kWarpSize];
  const int pairs = num_pairs(k);
  const int slots = pairs + 1;
  const int p = blockIdx.x;
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < n_chunks; c += kThreads)
    s += partials[c * slots + p];
  const double total = block_sum<kThreads>(s, red);
  if (threadIdx.x == 0 && p == pairs) {
    *probe = total;
  } else if (threadIdx.x == 0) {
    // Pair p -> (i, j), row-major upper triangle (as gram_accumulate).
    int i = 0;
    int row_begin = 0;
    while (p >= row_begin + (k - i)) {
      row_begin += k - i;
      ++i;
    }
    const int j = i + (p - row_begin);
    const out_t g = static_cast<out_t>(total);
    gram[int64_t(i) * k + j] = g;
    gram[int64_t(j) * k + i] = g;
  }
}

// True for finite x (x - x is NaN for Inf and NaN).
template <typename T>
__device__ __forceinline__ bool finite_value(T x) {
  return x - x == T(0);
}

// Pass 2: out = combine_value(...) per element; conflicts per block.
// aggregate only (both null for the combine ops): *skip != 0 means the call
// refuses (nonfinite="raise"): write nothing; a written value that is not
// finite sets *overflow (the inputs were finite, or the weights are zero).
template <int KS, typename scalar_t>
__global__ void __launch_bounds__(threads_for<KS>())
    combine_kernel(const TensorMeta* __restrict__ tensors,
                   const ChunkMeta* __restrict__ chunks, int64_t n_chunks,
                   int k_runtime,
                   const acc_t<scalar_t>* __restrict__ weights,
                   acc_t<scalar_t> gamma, int64_t mask,
                   int64_t* __restrict__ block_conflicts,
                   const int* __restrict__ skip, int* __restrict__ overflow) {
  using acc_type = acc_t<scalar_t>;
  constexpr int kT = threads_for<KS>();
  constexpr int kSlots = KS > 0 ? KS : kMaxK;
  constexpr int VEC = vec_for<KS, scalar_t>();
  using VecT = Vec<scalar_t, VEC>;
  const int k = KS > 0 ? KS : k_runtime;
  __shared__ int64_t red[kT / kWarpSize];

  // The same value for every thread of the block: a uniform early exit.
  if (skip != nullptr && *skip != 0) {
    if (threadIdx.x == 0) block_conflicts[blockIdx.x] = 0;
    return;
  }

  // Static K: K broadcast loads into registers (fully unrolled). Run-time K:
  // shared memory, as 32 more registers per thread (64 in double) would
  // spill next to the 32 values of the element.
  acc_type w_reg[KS > 0 ? KS : 1];
  __shared__ acc_type w_shared[KS > 0 ? 1 : kMaxK];
  const acc_type* w;
  if constexpr (KS > 0) {
#pragma unroll
    for (int i = 0; i < KS; ++i) w_reg[i] = weights[i];
    w = w_reg;
  } else {
    if (int(threadIdx.x) < k) w_shared[threadIdx.x] = weights[threadIdx.x];
    __syncthreads();
    w = w_shared;
  }
  // nonfinite="zero" zeroes every weight: write exact zeros then, even where
  // an input is non-finite (0 * NaN would not be 0).
  const bool zero_output = all_weights_zero(w, k);

  int64_t conflicts = 0;
  bool written_nonfinite = false;
  for (int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
    const ChunkMeta chunk = chunks[c];
    const TensorMeta t = tensors[chunk.tensor];
    const scalar_t* in = static_cast<const scalar_t*>(t.in);
    scalar_t* out = static_cast<scalar_t*>(t.out);
    __builtin_assume(__isGlobal(in));  // LDG/STG rather than generic LD/ST
    __builtin_assume(__isGlobal(out));

    const int64_t n_vec =
        (t.vec & kVecInOut) == kVecInOut ? (chunk.end - chunk.begin) / VEC : 0;
    for (int64_t q = threadIdx.x; q < n_vec; q += kT) {
      const int64_t e = chunk.begin + q * VEC;
      VecT raw[kSlots];
      load_rows<KS>(in, t.row_stride, k, e, raw);
      VecT result;
#pragma unroll
      for (int l = 0; l < VEC; ++l) {
        acc_type v[kSlots];
        unpack<KS>(raw, l, k, v);
        bool conflict = false;
        const acc_type r = combine_value<KS>(v, 1, k, w, gamma, mask, &conflict);
        result.val[l] = static_cast<scalar_t>(zero_output ? acc_type(0) : r);
        written_nonfinite |= !finite_value(static_cast<acc_type>(result.val[l]));
        conflicts += conflict;
      }
      *reinterpret_cast<VecT*>(out + e) = result;
    }
    for (int64_t e = chunk.begin + n_vec * VEC + threadIdx.x; e < chunk.end;
         e += kT) {
      acc_type v[kSlots];
      load_element<KS>(in, t.row_stride, k, e, v);
      bool conflict = false;
      const acc_type r = combine_value<KS>(v, 1, k, w, gamma, mask, &conflict);
      const scalar_t o = static_cast<scalar_t>(zero_output ? acc_type(0) : r);
      out[e] = o;
      written_nonfinite |= !finite_value(static_cast<acc_type>(o));
      conflicts += conflict;
    }
  }
  const int64_t total = block_sum<kT>(conflicts, red);
  if (threadIdx.x == 0) block_conflicts[blockIdx.x] = total;
  if (overflow != nullptr) {  // uniform: every thread takes the same branch
    const int any = __syncthreads_or(int(written_nonfinite));
    if (threadIdx.x == 0 && any != 0) atomicOr(overflow, 1);
  }
}

// Pass 2b: total conflict count (exact integer sum) into a 0-dim tensor.
__global__ void __launch_bounds__(kThreads)
    sum_conflicts_kernel(const int64_t* __restrict__ block_conflicts,
                         int64_t n, int64_t* __restrict__ total) {
  __shared__ int64_t red[kThreads / kWarpSize];
  int64_t s = 0;
  for (int64_t b = threadIdx.x; b < n; b += kThreads) s += block_conflicts[b];
  s = block_sum<kThreads>(s, red);
  if (threadIdx.x == 0) *total = s;
}

// aggregate's device-side report, read back only for nonfinite="raise".
enum Report : int {
  kReportNonfiniteInput = 0,  // an input value is Inf or NaN
  kReportGramOverflow = 1,    // finite inputs, the double Gram overflowed
  kReportOutputOverflow = 2,  // a written value did not fit (atomicOr)
  kReportSkip = 3,            // refused before the combine: write nothing
  kReportInts = 4,
};

// aggregate, pass 1c (one thread): the weights from the double Gram matrix
// (decide_weights, as the CPU backend), the flags, and the report, which it
// also resets for the combine pass.
template <typename acc_type>
__global__ void aggregate_weights_kernel(const double* __restrict__ gram,
                                         const double* __restrict__ probe,
                                         bool has_probe, int k, bool gas,
                                         bool raise, double* __restrict__ weights,
                                         acc_type* __restrict__ weights_acc,
                                         bool* __restrict__ flags,
                                         int* __restrict__ report) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double w[kMaxK];
  const WeightDecision d = decide_weights(gram, *probe, has_probe, k, gas, w);
  for (int i = 0; i < k; ++i) {
    weights[i] = w[i];
    weights_acc[i] = static_cast<acc_type>(w[i]);
  }
  flags[0] = d.nonfinite_input;
  flags[1] = d.overflow;
  report[kReportNonfiniteInput] = d.nonfinite_input;
  report[kReportGramOverflow] = d.overflow;
  report[kReportOutputOverflow] = 0;
  report[kReportSkip] = raise && (d.nonfinite_input || d.overflow);
}

// aggregate, pass 2b: block 0 sums the per-block conflict counts (exact
// integers) into the conflict fraction; if a written value overflowed, every
// block zeroes its chunks of the output and the overflow flag is set.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    aggregate_epilogue_kernel(const TensorMeta* __restrict__ tensors,
                              const ChunkMeta* __restrict__ chunks,
                              int64_t n_chunks,
                              const int64_t* __restrict__ block_conflicts,
                              int64_t n_blocks, int64_t elements,
                              const int* __restrict__ report,
                              double* __restrict__ fraction,
                              bool* __restrict__ flags) {
  __shared__ int64_t red[kThreads / kWarpSize];
  const bool overflowed = report[kReportOutputOverflow] != 0;
  if (blockIdx.x == 0) {
    int64_t s = 0;
    for (int64_t b = threadIdx.x; b < n_blocks; b += kThreads) s += block_conflicts[b];
    s = block_sum<kThreads>(s, red);
    if (threadIdx.x == 0) {
      *fraction = double(s) / double(elements > 0 ? elements : 1);
      if (overflowed) flags[1] = true;
    }
  }
  if (!overflowed) return;
  for (int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
    const ChunkMeta chunk = chunks[c];
    scalar_t* out = static_cast<scalar_t*>(tensors[chunk.tensor].out);
    for (int64_t e = chunk.begin + threadIdx.x; e < chunk.end; e += kThreads)
      out[e] = scalar_t(0);
  }
}

// ---------------------------------------------------------------- host side

std::vector<ChunkMeta> make_chunks(const std::vector<RowView>& views) {
  std::vector<ChunkMeta> chunks;
  for (size_t t = 0; t < views.size(); ++t) {
    for (int64_t b = 0; b < views[t].numel; b += kChunk) {
      chunks.push_back(
          ChunkMeta{int64_t(t), b, std::min(b + kChunk, views[t].numel)});
    }
  }
  return chunks;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVecBytes == 0;
}

// The metadata table on the device: per tensor a TensorMeta, then per chunk a
// ChunkMeta. `buffer` owns the device bytes (the op's scratch allocation when
// the table is carved from it); dropping it after the launches is safe: the
// caching allocator only hands the block out again to work ordered after them
// on the same stream.
struct Metadata {
  at::Tensor buffer;
  const TensorMeta* tensors;
  const ChunkMeta* chunks;
  int64_t n_chunks;
};

size_t metadata_bytes(size_t n_tensors, size_t n_chunks) {
  static_assert(sizeof(TensorMeta) % alignof(ChunkMeta) == 0,
                "the chunk table must stay aligned after the tensor table");
  return n_tensors * sizeof(TensorMeta) + n_chunks * sizeof(ChunkMeta);
}

// Builds the table in pinned host memory and copies it into `dst` (device
// bytes, 8-byte aligned, metadata_bytes(...) long) asynchronously on the
// current stream: a cudaMemcpyAsync, and the caching host allocator records
// an event on the pinned block, so no host synchronisation and no reuse of
// the block before the copy has run (under graph capture the block is kept
// for the graph). `outs` is empty for the Gram op.
Metadata upload_metadata_into(const std::vector<RowView>& views,
                              const std::vector<at::Tensor>& outs,
                              const std::vector<ChunkMeta>& chunks, int64_t K,
                              size_t elem_size, const at::Tensor& dst) {
  std::vector<TensorMeta> tensors(views.size());
  for (size_t t = 0; t < views.size(); ++t) {
    const RowView& view = views[t];
    TensorMeta& m = tensors[t];
    m.in = view.tensor.const_data_ptr();
    m.out = outs.empty() ? nullptr : outs[t].mutable_data_ptr();
    m.row_stride = view.row_stride;
    m.numel = view.numel;
    const bool stride_ok =
        K == 1 || (view.row_stride * int64_t(elem_size)) % kVecBytes == 0;
    m.vec = (aligned16(m.in) && stride_ok ? kVecIn : 0) |
            (m.out != nullptr && aligned16(m.out) ? kVecOut : 0);
  }
  const size_t tensor_bytes = tensors.size() * sizeof(TensorMeta);
  const size_t chunk_bytes = chunks.size() * sizeof(ChunkMeta);
  TORCH_INTERNAL_ASSERT(dst.numel() == int64_t(tensor_bytes + chunk_bytes) &&
                        reinterpret_cast<uintptr_t>(dst.const_data_ptr()) % 8 == 0);
  at::Tensor host = at::empty(
      {int64_t(tensor_bytes + chunk_bytes)},
      at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  uint8_t* h = host.mutable_data_ptr<uint8_t>();
  std::memcpy(h, tensors.data(), tensor_bytes);
  std::memcpy(h + tensor_bytes, chunks.data(), chunk_bytes);
  at::Tensor(dst).copy_(host, /*non_blocking=*/true);
  const uint8_t* d = dst.const_data_ptr<uint8_t>();
  return Metadata{dst, reinterpret_cast<const TensorMeta*>(d),
                  reinterpret_cast<const ChunkMeta*>(d + tensor_bytes),
                  int64_t(chunks.size())};
}

// The same into a device allocation of its own (gram and combine).
Metadata upload_metadata(const std::vector<RowView>& views,
                         const std::vector<at::Tensor>& outs,
                         const std::vector<ChunkMeta>& chunks, int64_t K,
                         size_t elem_size, const at::Device& device) {
  at::Tensor dst = at::empty({int64_t(metadata_bytes(views.size(), chunks.size()))},
                             at::TensorOptions().dtype(at::kByte).device(device));
  return upload_metadata_into(views, outs, chunks, K, elem_size, dst);
}

int grid_for(int64_t n_chunks) {
  return int(std::min(n_chunks, kMaxBlocks));
}

at::Tensor gram_cuda(at::TensorList grads) {
  check_gram_inputs(grads, "cg2a::gram");
  const int64_t K = grads[0].size(0);
  const c10::cuda::CUDAGuard guard(grads[0].device());
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  const int64_t n_chunks = int64_t(chunks.size());
  const int pairs = num_pairs(int(K));
  const auto options = grads[0].options();
  at::Tensor gram = at::empty(
      {K, K}, options.dtype(accumulation_dtype(grads[0].scalar_type())));
  at::Tensor partials = at::empty({n_chunks, pairs + 1}, options.dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads[0].scalar_type(), "cg2a::gram", [&] {
        using acc_type = acc_t<scalar_t>;
        if (n_chunks > 0) {
          const Metadata meta = upload_metadata(views, {}, chunks, K,
                                                sizeof(scalar_t),
                                                grads[0].device());
          dispatch_k(K, [&](auto ks) {
            constexpr int KS = decltype(ks)::value;
            gram_partials_kernel<KS, scalar_t>
                <<<grid_for(n_chunks), threads_for<KS>(), 0, stream>>>(
                    meta.tensors, meta.chunks, n_chunks, int(K),
                    partials.mutable_data_ptr<double>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        }
        // Also runs with no chunks (all tensors empty): writes zeros.
        gram_finalize_kernel<acc_type><<<pairs, kThreads, 0, stream>>>(
            partials.const_data_ptr<double>(), n_chunks, int(K),
            gram.mutable_data_ptr<acc_type>(), /*probe=*/nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return gram;
}

bool stream_is_capturing() {
  return at::cuda::currentStreamCaptureStatus() != at::cuda::CaptureStatus::None;
}

// A non-contiguous out tensor is written through a contiguous buffer.
std::vector<at::Tensor> contiguous_targets(at::TensorList out) {
  std::vector<at::Tensor> targets;
  targets.reserve(out.size());
  for (const at::Tensor& o : out)
    targets.push_back(o.is_contiguous()
                          ? o
                          : at::empty_like(o, at::MemoryFormat::Contiguous));
  return targets;
}

void copy_back(at::TensorList out, const std::vector<at::Tensor>& targets) {
  for (size_t t = 0; t < out.size(); ++t)
    if (!targets[t].is_same(out[t])) out[t].copy_(targets[t]);
}

at::Tensor combine_out_impl(at::TensorList grads, const at::Tensor& weights,
                            double gamma, int64_t mask, at::TensorList out,
                            const char* op) {
  check_combine_inputs(grads, weights, gamma, mask, out, op);
  check_no_overlap(out, grads, op);
  const c10::cuda::CUDAGuard guard(grads[0].device());
  // The weights' values are checked on the host (one read back of K numbers);
  // a stream being captured into a CUDA graph cannot read back, so there the
  // values are the caller's responsibility.
  if (!stream_is_capturing()) check_weight_values(weights, op);
  const int64_t K = grads[0].size(0);
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  const int64_t n_chunks = int64_t(chunks.size());
  std::vector<at::Tensor> targets = contiguous_targets(out);
  const auto options = grads[0].options();
  const int64_t n_blocks = n_chunks > 0 ? grid_for(n_chunks) : 0;
  at::Tensor block_conflicts = at::empty({n_blocks}, options.dtype(at::kLong));
  at::Tensor conflicts = at::empty({}, options.dtype(at::kLong));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grads[0].scalar_type(), "cg2a::combine", [&] {
        using acc_type = acc_t<scalar_t>;
        if (n_chunks > 0) {
          // Weights stay on the device: the kernel loads them.
          const at::Tensor w = weights.contiguous();
          const acc_type gamma_acc = static_cast<acc_type>(gamma);
          const Metadata meta = upload_metadata(views, targets, chunks, K,
                                                sizeof(scalar_t),
                                                grads[0].device());
          dispatch_k(K, [&](auto ks) {
            constexpr int KS = decltype(ks)::value;
            combine_kernel<KS, scalar_t>
                <<<int(n_blocks), threads_for<KS>(), 0, stream>>>(
                    meta.tensors, meta.chunks, n_chunks, int(K),
                    w.const_data_ptr<acc_type>(), gamma_acc, mask,
                    block_conflicts.mutable_data_ptr<int64_t>(),
                    /*skip=*/nullptr, /*overflow=*/nullptr);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        }
        sum_conflicts_kernel<<<1, kThreads, 0, stream>>>(
            block_conflicts.const_data_ptr<int64_t>(), n_blocks,
            conflicts.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });

  copy_back(out, targets);
  return conflicts;
}

at::Tensor combine_out_cuda(at::TensorList grads, const at::Tensor& weights,
                            double gamma, int64_t mask, at::TensorList out) {
  return combine_out_impl(grads, weights, gamma, mask, out, "cg2a::combine_out");
}

std::tuple<std::vector<at::Tensor>, at::Tensor> combine_cuda(
    at::TensorList grads, const at::Tensor& weights, double gamma,
    int64_t mask) {
  return combine_into_new_outputs(
      grads, weights, gamma, mask,
      [](at::TensorList g, const at::Tensor& w, double gm, int64_t m, at::TensorList o) {
        return combine_out_impl(g, w, gm, m, o, "cg2a::combine");
      });
}

// Byte offset of the next 8-byte-aligned region after `bytes`.
size_t align8(size_t bytes) { return (bytes + 7) / 8 * 8; }

AggregateStats aggregate_out_impl(at::TensorList grads, double gamma, bool gas,
                                  std::string_view mask_name,
                                  std::string_view nonfinite_name,
                                  at::TensorList out, const char* op) {
  const AggregateOptions options =
      check_aggregate_inputs(grads, gamma, mask_name, nonfinite_name, out, op);
  check_no_overlap(out, grads, op);
  const bool raise = options.nonfinite == NonfinitePolicy::kRaise;
  const c10::cuda::CUDAGuard guard(grads[0].device());
  TORCH_CHECK_VALUE(!(raise && stream_is_capturing()), op,
                    ": nonfinite='raise' reads one flag back from the GPU, "
                    "which a stream being captured into a CUDA graph cannot "
                    "do; use nonfinite='zero' (and result.zeroed) under capture");
  const int64_t K = grads[0].size(0);
  const auto dtype = grads[0].scalar_type();
  const auto views = row_views(grads);
  const auto chunks = make_chunks(views);
  const int64_t n_chunks = int64_t(chunks.size());
  int64_t elements = 0;
  for (const RowView& v : views) elements += v.numel;
  std::vector<at::Tensor> targets = contiguous_targets(out);
  const int pairs = num_pairs(int(K));
  const int64_t n_blocks = n_chunks > 0 ? grid_for(n_chunks) : 0;
  const int epilogue_blocks = int(std::max<int64_t>(1, std::min<int64_t>(n_chunks, 256)));

  const auto device_options = grads[0].options();
  const auto f64 = device_options.dtype(at::kDouble);
  at::Tensor gram = at::empty({K, K}, f64);
  at::Tensor weights = at::empty({K}, f64);
  at::Tensor fraction = at::empty({}, f64);
  at::Tensor flags = at::empty({2}, device_options.dtype(at::kBool));
  // One scratch allocation, 8-byte-aligned regions: the Gram partials, the
  // finite probe, the per-block conflict counts, the weights in the
  // accumulation dtype, the report (kReportInts ints) and the metadata table.
  const size_t partials_at = 0;
  const size_t probe_at = align8(partials_at + size_t(n_chunks) * (pairs + 1) * sizeof(double));
  const size_t conflicts_at = align8(probe_at + sizeof(double));
  const size_t weights_at = align8(conflicts_at + size_t(n_blocks) * sizeof(int64_t));
  const size_t report_at = align8(weights_at + size_t(K) * sizeof(double));
  // the metadata table last: the one device allocation of the op besides its outputs
  const size_t meta_at = align8(report_at + kReportInts * sizeof(int));
  const size_t meta_bytes = n_chunks > 0 ? metadata_bytes(views.size(), chunks.size()) : 0;
  const size_t scratch_bytes = align8(meta_at + meta_bytes);
  at::Tensor scratch = at::empty({int64_t(scratch_bytes)}, device_options.dtype(at::kByte));
  uint8_t* base = scratch.mutable_data_ptr<uint8_t>();
  double* partials = reinterpret_cast<double*>(base + partials_at);
  double* probe = reinterpret_cast<double*>(base + probe_at);
  int64_t* block_conflicts = reinterpret_cast<int64_t*>(base + conflicts_at);
  int* report = reinterpret_cast<int*>(base + report_at);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cg2a::aggregate", [&] {
    using acc_type = acc_t<scalar_t>;
    acc_type* weights_acc = reinterpret_cast<acc_type*>(base + weights_at);
    // ONE metadata upload (inputs and outputs) for both passes.
    const Metadata meta =
        n_chunks > 0
            ? upload_metadata_into(views, targets, chunks, K, sizeof(scalar_t),
                                   scratch.narrow(0, int64_t(meta_at), int64_t(meta_bytes)))
            : Metadata{at::Tensor(), nullptr, nullptr, 0};
    dispatch_k(K, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      if (n_chunks > 0) {
        gram_partials_kernel<KS, scalar_t>
            <<<grid_for(n_chunks), threads_for<KS>(), 0, stream>>>(
                meta.tensors, meta.chunks, n_chunks, int(K), partials);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      // Also runs with no chunks (all tensors empty): zeros.
      gram_finalize_kernel<double><<<pairs + 1, kThreads, 0, stream>>>(
          partials, n_chunks, int(K), gram.mutable_data_ptr<double>(), probe);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      aggregate_weights_kernel<acc_type><<<1, kWarpSize, 0, stream>>>(
          gram.const_data_ptr<double>(), probe, dtype == at::kDouble, int(K), gas, raise,
          weights.mutable_data_ptr<double>(), weights_acc, flags.mutable_data_ptr<bool>(),
          report);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (n_chunks > 0) {
        combine_kernel<KS, scalar_t>
            <<<int(n_blocks), threads_for<KS>(), 0, stream>>>(
                meta.tensors, meta.chunks, n_chunks, int(K), weights_acc,
                static_cast<acc_type>(gamma), options.mask, block_conflicts, report + kReportSkip,
                report + kReportOutputOverflow);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      aggregate_epilogue_kernel<scalar_t><<<epilogue_blocks, kThreads, 0, stream>>>(
          meta.tensors, meta.chunks, n_chunks, block_conflicts, n_blocks, elements, report,
          fraction.mutable_data_ptr<double>(), flags.mutable_data_ptr<bool>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });

  if (raise) {
    // The one host synchronisation: 16 bytes of report.
    const at::Tensor host = scratch.narrow(0, int64_t(report_at), kReportInts * sizeof(int)).to(at::kCPU);
    const int* r = reinterpret_cast<const int*>(host.const_data_ptr<uint8_t>());
    if (r[kReportNonfiniteInput]) raise_nonfinite_input(gram.to(at::kCPU), op);
    if (r[kReportGramOverflow]) raise_overflow(/*in_gram=*/true, dtype, op);
    copy_back(out, targets);
    if (r[kReportOutputOverflow]) raise_overflow(/*in_gram=*/false, dtype, op);
  } else {
    copy_back(out, targets);
  }
  return {gram, weights, fraction, flags};
}

AggregateStats aggregate_out_cuda(at::TensorList grads, double gamma, bool gas,
                                  std::string_view mask, std::string_view nonfinite,
                                  at::TensorList out) {
  return aggregate_out_impl(grads, gamma, gas, mask, nonfinite, out, "cg2a::aggregate_out");
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
aggregate_cuda(at::TensorList grads, double gamma, bool gas, std::string_view mask,
               std::string_view nonfinite) {
  return aggregate_into_new_outputs(
      grads, gamma, gas, mask, nonfinite,
      [](at::TensorList g, double gm, bool gs, std::string_view m, std::string_view n,
         at::TensorList o) { return aggregate_out_impl(g, gm, gs, m, n, o, "cg2a::aggregate"); });
}

}  // namespace

TORCH_LIBRARY_IMPL(cg2a, CUDA, m) {
  m.impl("gram", &gram_cuda);
  m.impl("combine", &combine_cuda);
  m.impl("combine_out", &combine_out_cuda);
  m.impl("aggregate", &aggregate_cuda);
  m.impl("aggregate_out", &aggregate_out_cuda);
}

}  // namespace cg2a
