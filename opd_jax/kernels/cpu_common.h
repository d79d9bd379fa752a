// Copyright 2026 The opd_jax Authors.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

// What the CPU kernels (cpu_kernels.cc, cpu_attention.cc) share: eight-lane
// float vectors, loads of float32 / bfloat16, an exp for the softmax, and a
// loop over XLA's intra-op thread pool.

#ifndef OPD_JAX_KERNELS_CPU_COMMON_H_
#define OPD_JAX_KERNELS_CPU_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace opd_kernels {

namespace ffi = xla::ffi;

// Eight floats; GCC and Clang lower it to AVX registers, or to pairs of
// 128-bit registers where AVX is missing. aligned(4): rows need not be
// 32-byte aligned.
typedef float Vec8 __attribute__((vector_size(32), aligned(4)));

typedef int32_t Int8 __attribute__((vector_size(32), aligned(4)));
typedef uint16_t Bf16x8 __attribute__((vector_size(16), aligned(2)));

// Weights and caches come as float32 or bfloat16 (uint16_t, its top 16
// bits); both are read as float32: a bfloat16 widens exactly by a shift.
inline Vec8 Load(const float* p) { return *reinterpret_cast<const Vec8*>(p); }
inline Vec8 Load(const uint16_t* p) {
  const Int8 bits =
      __builtin_convertvector(*reinterpret_cast<const Bf16x8*>(p), Int8) << 16;
  Vec8 out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
inline float ToFloat(float a) { return a; }
inline float ToFloat(uint16_t a) {
  const uint32_t bits = static_cast<uint32_t>(a) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

inline float HorizontalSum(Vec8 a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

inline Vec8 Splat(float a) { return Vec8{a, a, a, a, a, a, a, a}; }
inline void Store(float* p, Vec8 v) { *reinterpret_cast<Vec8*>(p) = v; }

// exp(x) for x <= 0 (logits minus their maximum), to about 1 ulp: Cephes'
// expf polynomial on x - n ln2, scaled by 2^n through the exponent bits;
// exactly 0 below -87.3 (where float32's exp underflows), like XLA's exp of
// the masked logits. By hand because glibc's vector expf is only reached
// through -ffast-math, which would also reassociate the sums above.
inline Vec8 ExpNonPositive(Vec8 x) {
  const Vec8 lo = Splat(-87.33654f);
  const Vec8 xc = x < lo ? lo : x;
  const Vec8 magic = Splat(12582912.0f);  // 1.5 * 2^23: rounds to integer
  const Vec8 n = (xc * Splat(1.44269504088896341f) + magic) - magic;
  const Vec8 r = xc - n * Splat(0.693359375f) - n * Splat(-2.12194440e-4f);
  Vec8 p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  p = p * r * r + r + Splat(1.0f);
  const Int8 bits = (__builtin_convertvector(n, Int8) + 127) << 23;
  Vec8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? Splat(0.0f) : p * scale;
}

// row[c] = exp(row[c] - shift) for c < n (0 where row is -inf); the sum
// (vector lanes summed first, then the tail in order).
inline float ExpRow(float* row, float shift, int64_t n) {
  Vec8 acc = Splat(0.0f);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const Vec8 e = ExpNonPositive(Load(row + c) - Splat(shift));
    Store(row + c, e);
    acc += e;
  }
  float total = HorizontalSum(acc);
  for (; c < n; ++c) {
    const float e = ExpNonPositive(Splat(row[c] - shift))[0];
    row[c] = e;
    total += e;
  }
  return total;
}

// Runs fn(begin, end) over [0, units) in chunks of at least `min_chunk`
// units, claimed by whichever thread comes first. The calling thread claims
// too and then waits only for chunks another thread has claimed (and so is
// running), so no thread ever waits on a task that is still queued: no
// deadlock when every pool thread runs one of these kernels at once.
inline void ParallelFor(ffi::ThreadPool& pool, int64_t units, int64_t min_chunk,
                 std::function<void(int64_t, int64_t)> fn) {
  struct Work {
    std::function<void(int64_t, int64_t)> fn;
    int64_t units, chunk, chunks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    void Run() {
      for (int64_t c;
           (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
        fn(c * chunk, std::min(units, (c + 1) * chunk));
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  if (units <= 0) return;
  auto work = std::make_shared<Work>();
  work->fn = std::move(fn);
  work->units = units;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // About 4 chunks per thread, for balance on a busy pool.
  work->chunk = std::max(min_chunk, (units + 4 * threads - 1) / (4 * threads));
  work->chunks = (units + work->chunk - 1) / work->chunk;
  for (int64_t t = 1; t < std::min(threads, work->chunks); ++t) {
    // A task that starts after the last chunk was claimed finds none and
    // returns; the shared_ptr keeps `work` alive until then.
    pool.Schedule([work] { work->Run(); });
  }
  work->Run();
  while (work->done.load(std::memory_order_acquire) < work->chunks) {
    std::this_thread::yield();
  }
}

}  // namespace opd_kernels

#endif  // OPD_JAX_KERNELS_CPU_COMMON_H_
