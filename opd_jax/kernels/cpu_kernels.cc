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

// The few-row product of a decode step, in float32, as an XLA:CPU FFI handler:
//
//   OpdRowsDot: y[M, N] = x[M, K] . w[N, K]^T (the trunk projections)
//
// Why by hand: at a few rows (the batch) XLA:CPU hands these dots to
// YNNPACK, which on the 2-core machine of BENCHMARKS.md reads their weights
// at 3-6 GB/s, a third of what a plain reduction reaches; no library we use
// offers such a product as an XLA custom call. This loop streams each row of
// w once, against all rows of x held in L1, on XLA's own intra-op thread
// pool.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Matrix = ffi::Buffer<ffi::F32, 2>;
using ResultMatrix = ffi::ResultBuffer<ffi::F32, 2>;

// Eight floats; GCC and Clang lower it to AVX registers, or to pairs of
// 128-bit registers where AVX is missing. aligned(4): rows need not be
// 32-byte aligned.
typedef float Vec8 __attribute__((vector_size(32), aligned(4)));

inline Vec8 Load(const float* p) { return *reinterpret_cast<const Vec8*>(p); }

inline float HorizontalSum(Vec8 a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// y[r, v + c] = <x[r, :], w[v + c, :]> for r < R, c < C.
template <int R, int C>
inline void Tile(const float* x, const float* w, float* y, int64_t k,
                 int64_t n, int64_t v) {
  Vec8 acc[R][C] = {};
  int64_t d = 0;
  for (; d + 8 <= k; d += 8) {
    Vec8 wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) wv[c] = Load(w + (v + c) * k + d);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      Vec8 xv = Load(x + r * k + d);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] += xv * wv[c];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      float s = HorizontalSum(acc[r][c]);
      for (int64_t t = d; t < k; ++t) s += x[r * k + t] * w[(v + c) * k + t];
      y[r * n + v + c] = s;
    }
  }
}

template <int R>
void RowsOfX(const float* x, const float* w, float* y, int64_t k, int64_t n,
             int64_t v0, int64_t v1) {
  int64_t v = v0;
  for (; v + 2 <= v1; v += 2) Tile<R, 2>(x, w, y, k, n, v);
  for (; v < v1; ++v) Tile<R, 1>(x, w, y, k, n, v);
}

// Outputs y[:, v0:v1]. Rows of w go in blocks small enough (48 rows of a
// K <= 1024 matrix: at most 192 KB) to stay in L2 while every group of 4
// rows of x passes over them, so w is read from memory once.
void RowsDotRange(const float* x, const float* w, float* y, int64_t m,
                  int64_t k, int64_t n, int64_t v0, int64_t v1) {
  constexpr int64_t kBlock = 48;
  for (int64_t vb = v0; vb < v1; vb += kBlock) {
    const int64_t ve = std::min(v1, vb + kBlock);
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) RowsOfX<4>(x + r * k, w, y + r * n, k, n, vb, ve);
    for (; r < m; ++r) RowsOfX<1>(x + r * k, w, y + r * n, k, n, vb, ve);
  }
}

// Runs fn(begin, end) over [0, units) in chunks of at least `min_chunk`
// units, claimed by whichever thread comes first. The calling thread claims
// too and then waits only for chunks another thread has claimed (and so is
// running), so no thread ever waits on a task that is still queued: no
// deadlock when every pool thread runs one of these kernels at once.
void ParallelFor(ffi::ThreadPool& pool, int64_t units, int64_t min_chunk,
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

ffi::Error RowsDot(ffi::ThreadPool pool, Matrix x, Matrix w, ResultMatrix y) {
  const int64_t m = x.dimensions()[0], k = x.dimensions()[1];
  const int64_t n = w.dimensions()[0];
  if (w.dimensions()[1] != k) {
    return ffi::Error::InvalidArgument("opd_rows_dot: x and w differ in K");
  }
  if (m == 0) return ffi::Error::Success();
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  // Units are rows of w; at least 48 per chunk so a chunk is worth a
  // hand-off.
  ParallelFor(pool, n, 48, [=](int64_t v0, int64_t v1) {
    RowsDotRange(xp, wp, yp, m, k, n, v0, v1);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdRowsDot, RowsDot,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>());
