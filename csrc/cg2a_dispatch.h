// Compile-time specialisation on K, shared by both backends.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cg2a_elementwise.h"

namespace cg2a {

// Calls fn(std::integral_constant<int, KS>{}) with KS = K when
// 1 <= K <= kMaxStaticK (fully unrolled kernels), else KS = 0 (run-time K).
template <typename Fn>
void dispatch_k(int64_t K, Fn&& fn) {
  static_assert(kMaxStaticK == 8, "update the cases below");
  switch (K) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    default: fn(std::integral_constant<int, 0>{}); break;
  }
}

}  // namespace cg2a
