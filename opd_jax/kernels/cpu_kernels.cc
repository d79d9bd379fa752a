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

// The two parts of a decode step that XLA:CPU runs slowly, as XLA:CPU FFI
// handlers, each for float32 and (suffix Bf16) bfloat16 weights or caches:
//
//   OpdRowsDot: y[M, N] = x[M, K] . w[N, K]^T (the projections and the head)
//   OpdDecodeAttention: one query token per row attends to its KV cache
//
// Why by hand: at a few rows (the batch) XLA:CPU hands these dots to
// YNNPACK, which on the 2-core machine of BENCHMARKS.md reads their weights
// at 3-6 GB/s, a third of what a plain reduction reaches; no library we use
// offers such a product as an XLA custom call. This loop streams each row of
// w once, against all rows of x held in L1, on XLA's own intra-op thread
// pool.
//
// The attention kernel writes the step's key and value into the cache in
// place (the cache is aliased to its outputs) and reads only the slots up to
// the query's own, where XLA's fused loops read the whole buffer, empty
// slots included, and split q.k^T, the softmax and p.V into passes over
// [B, K, G, S] intermediates.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "cpu_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace opd_kernels;  // NOLINT: the shared vector helpers

using Matrix = ffi::Buffer<ffi::F32, 2>;
using ResultMatrix = ffi::ResultBuffer<ffi::F32, 2>;

// Asks for the cache line of base[offset]. The address is formed as an
// integer: past the end of w it is no pointer arithmetic, and a prefetch
// never faults.
template <typename T>
inline void Prefetch(const T* base, int64_t offset) {
  __builtin_prefetch(reinterpret_cast<const void*>(
      reinterpret_cast<uintptr_t>(base) + offset * sizeof(T)));
}

// Rows of w per block (see RowsDotRange).
constexpr int64_t kRowBlock = 48;

// y[r, v + c] = <x[r, :], w[v + c, :]> for r < R, c < C.
template <int R, int C, typename TW>
inline void Tile(const float* x, const TW* w, float* y, int64_t k, int64_t n,
                 int64_t v) {
  Vec8 acc[R][C] = {};
  int64_t d = 0;
  for (; d + 8 <= k; d += 8) {
    Vec8 wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      // The same place in the next block of rows of w, one cache line at a
      // time: for a head-sized w streamed from DRAM this took the product
      // from 4.45 to 3.09 ms (B = 8, V = 32000, D = 256).
      if ((d & 15) == 0) Prefetch(w, (v + c + kRowBlock) * k + d);
      wv[c] = Load(w + (v + c) * k + d);
    }
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
      for (int64_t t = d; t < k; ++t) {
        s += x[r * k + t] * ToFloat(w[(v + c) * k + t]);
      }
      y[r * n + v + c] = s;
    }
  }
}

template <int R, typename TW>
void RowsOfX(const float* x, const TW* w, float* y, int64_t k, int64_t n,
             int64_t v0, int64_t v1) {
  int64_t v = v0;
  for (; v + 2 <= v1; v += 2) Tile<R, 2>(x, w, y, k, n, v);
  for (; v < v1; ++v) Tile<R, 1>(x, w, y, k, n, v);
}

// Outputs y[:, v0:v1]. Rows of w go in blocks small enough (48 rows of a
// K <= 1024 matrix: at most 192 KB) to stay in L2 while every group of 4
// rows of x passes over them, so w is read from memory once.
template <typename TW>
void RowsDotRange(const float* x, const TW* w, float* y, int64_t m, int64_t k,
                  int64_t n, int64_t v0, int64_t v1) {
  for (int64_t vb = v0; vb < v1; vb += kRowBlock) {
    const int64_t ve = std::min(v1, vb + kRowBlock);
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {
      RowsOfX<4>(x + r * k, w, y + r * n, k, n, vb, ve);
    }
    for (; r < m; ++r) RowsOfX<1>(x + r * k, w, y + r * n, k, n, vb, ve);
  }
}

template <ffi::DataType W>
ffi::Error RowsDot(ffi::ThreadPool pool, Matrix x, ffi::Buffer<W, 2> w,
                   ResultMatrix y) {
  const int64_t m = x.dimensions()[0], k = x.dimensions()[1];
  const int64_t n = w.dimensions()[0];
  if (w.dimensions()[1] != k) {
    return ffi::Error::InvalidArgument("opd_rows_dot: x and w differ in K");
  }
  if (m == 0) return ffi::Error::Success();
  const float* xp = x.typed_data();
  const auto* wp = w.typed_data();
  float* yp = y->typed_data();
  // Units are rows of w; at least 48 per chunk so a chunk is worth a
  // hand-off.
  ParallelFor(pool, n, kRowBlock, [=](int64_t v0, int64_t v1) {
    RowsDotRange(xp, wp, yp, m, k, n, v0, v1);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// Decode attention.

using Rank4F32 = ffi::Buffer<ffi::F32, 4>;
using ResultRank4F32 = ffi::ResultBuffer<ffi::F32, 4>;
using Mask = ffi::Buffer<ffi::PRED, 2>;
using Slot = ffi::Buffer<ffi::S32, 0>;

struct AttentionShape {
  int64_t groups, head_dim, slots;
};

// One (row, kv head): writes slot `write` of k [H, S] and v [S, H], then
// out[g] = softmax_s(scale q[g] . k[:, s]) . v[s] over the slots s <= last
// that `mask` allows. `logits` is scratch of at least G * (last + 1) floats.
template <typename TC>
void AttendOne(const AttentionShape& shape, const float* q, const TC* k_new,
               const TC* v_new, TC* k, TC* v, const bool* mask, int64_t write,
               int64_t last, float scale, float* logits, float* out) {
  const int64_t g_count = shape.groups, h_dim = shape.head_dim;
  const int64_t s_len = shape.slots, n = last + 1;
  for (int64_t h = 0; h < h_dim; ++h) k[h * s_len + write] = k_new[h];
  std::memcpy(v + write * h_dim, v_new, h_dim * sizeof(TC));

  int64_t allowed = 0;
  for (int64_t s = 0; s < n; ++s) allowed += mask[s];
  if (allowed == 0) {
    // Every slot masked: XLA's softmax of equal floors is uniform over the
    // whole buffer, so the output is the mean of all S values.
    for (int64_t g = 0; g < g_count; ++g) {
      float* o = out + g * h_dim;
      std::fill(o, o + h_dim, 0.0f);
      for (int64_t s = 0; s < s_len; ++s)
        for (int64_t h = 0; h < h_dim; ++h) o[h] += ToFloat(v[s * h_dim + h]);
      for (int64_t h = 0; h < h_dim; ++h) o[h] /= static_cast<float>(s_len);
    }
    return;
  }

  // logits[g, s] = sum_h q[g, h] k[h, s]: each row of k streams once per
  // group, contiguous along the slots, into logits held in L1.
  std::fill(logits, logits + g_count * n, 0.0f);
  for (int64_t h = 0; h < h_dim; ++h) {
    const TC* kr = k + h * s_len;
    for (int64_t g = 0; g < g_count; ++g) {
      const float a = q[g * h_dim + h];
      const Vec8 av = Splat(a);
      float* l = logits + g * n;
      int64_t s = 0;
      for (; s + 8 <= n; s += 8) Store(l + s, Load(l + s) + av * Load(kr + s));
      for (; s < n; ++s) l[s] += a * ToFloat(kr[s]);
    }
  }

  // Masked softmax numerators, in place; the division comes after p.V.
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> sum(g_count);
  for (int64_t g = 0; g < g_count; ++g) {
    float* l = logits + g * n;
    float top = neg_inf;
    for (int64_t s = 0; s < n; ++s) {
      l[s] = mask[s] ? l[s] * scale : neg_inf;
      top = std::max(top, l[s]);
    }
    sum[g] = ExpRow(l, top, n);
  }

  // out[g, :] = sum_s p[g, s] v[s, :] / sum[g]: two groups by 32 lanes of H
  // per pass over the slots (eight accumulators).
  for (int64_t g0 = 0; g0 < g_count; g0 += 2) {
    const int64_t gs = std::min<int64_t>(2, g_count - g0);
    int64_t h0 = 0;
    for (; h0 + 32 <= h_dim; h0 += 32) {
      Vec8 acc[2][4] = {};
      for (int64_t s = 0; s < n; ++s) {
        const TC* vr = v + s * h_dim + h0;
        const Vec8 v0 = Load(vr), v1 = Load(vr + 8), v2 = Load(vr + 16),
                   v3 = Load(vr + 24);
        for (int64_t j = 0; j < gs; ++j) {
          const Vec8 p = Splat(logits[(g0 + j) * n + s]);
          acc[j][0] += p * v0;
          acc[j][1] += p * v1;
          acc[j][2] += p * v2;
          acc[j][3] += p * v3;
        }
      }
      for (int64_t j = 0; j < gs; ++j) {
        const Vec8 inv = Splat(1.0f / sum[g0 + j]);
        float* o = out + (g0 + j) * h_dim + h0;
        for (int c = 0; c < 4; ++c) Store(o + 8 * c, acc[j][c] * inv);
      }
    }
    for (; h0 < h_dim; ++h0) {  // head dims that are not a multiple of 32
      for (int64_t j = 0; j < gs; ++j) {
        const float* p = logits + (g0 + j) * n;
        float acc = 0.0f;
        for (int64_t s = 0; s < n; ++s) {
          acc += p[s] * ToFloat(v[s * h_dim + h0]);
        }
        out[(g0 + j) * h_dim + h0] = acc / sum[g0 + j];
      }
    }
  }
}

template <ffi::DataType C>
ffi::Error DecodeAttention(ffi::ThreadPool pool, Rank4F32 q,
                           ffi::Buffer<C, 3> k_new, ffi::Buffer<C, 3> v_new,
                           ffi::Buffer<C, 4> k_in, ffi::Buffer<C, 4> v_in,
                           Mask key_mask, Slot start, float scale,
                           ResultRank4F32 out, ffi::ResultBuffer<C, 4> k_out,
                           ffi::ResultBuffer<C, 4> v_out) {
  using TC = ffi::NativeType<C>;
  const auto qd = q.dimensions(), kd = k_in.dimensions();
  const int64_t b = qd[0], kv = qd[1], g = qd[2], h = qd[3], s = kd[3];
  if (kd[0] != b || kd[1] != kv || kd[2] != h ||
      v_in.dimensions()[2] != s || key_mask.dimensions()[1] != s) {
    return ffi::Error::InvalidArgument(
        "opd_decode_attention: q, caches and key_mask disagree in shape");
  }
  if (b == 0 || kv == 0 || s == 0) return ffi::Error::Success();
  // The cache outputs alias the inputs; copy only if XLA did not honour it.
  if (k_out->typed_data() != k_in.typed_data()) {
    std::memcpy(k_out->typed_data(), k_in.typed_data(),
                k_in.element_count() * sizeof(TC));
  }
  if (v_out->typed_data() != v_in.typed_data()) {
    std::memcpy(v_out->typed_data(), v_in.typed_data(),
                v_in.element_count() * sizeof(TC));
  }
  const int64_t first = *start.typed_data();
  // dynamic_update_slice's clamp for the write; causality uses the slot.
  const int64_t write = std::clamp<int64_t>(first, 0, s - 1);
  const int64_t last = std::clamp<int64_t>(first, -1, s - 1);
  const AttentionShape shape{g, h, s};
  const float* qp = q.typed_data();
  const TC* knp = k_new.typed_data();
  const TC* vnp = v_new.typed_data();
  TC* kp = k_out->typed_data();
  TC* vp = v_out->typed_data();
  const bool* mp = key_mask.typed_data();
  float* op = out->typed_data();
  ParallelFor(pool, b * kv, 1, [=](int64_t u0, int64_t u1) {
    std::vector<float> logits(g * std::max<int64_t>(last + 1, 1));
    for (int64_t u = u0; u < u1; ++u) {
      AttendOne(shape, qp + u * g * h, knp + u * h, vnp + u * h,
                kp + u * h * s, vp + u * s * h, mp + (u / kv) * s, write, last,
                scale, logits.data(), op + u * g * h);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// Handlers bind one element type each; the macro's arguments cannot hold a
// template's comma, hence the aliases.
using MatrixBf16 = ffi::Buffer<ffi::BF16, 2>;
using Rank3F32 = ffi::Buffer<ffi::F32, 3>;
using Rank3Bf16 = ffi::Buffer<ffi::BF16, 3>;
using Rank4Bf16 = ffi::Buffer<ffi::BF16, 4>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdRowsDot, RowsDot<ffi::F32>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdRowsDotBf16, RowsDot<ffi::BF16>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()        // x, float32
                                  .Arg<MatrixBf16>()    // w, bfloat16
                                  .Ret<Matrix>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdDecodeAttention, DecodeAttention<ffi::F32>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank4F32>()      // q [B, K, G, H]
                                  .Arg<Rank3F32>()      // k_new [B, K, H]
                                  .Arg<Rank3F32>()      // v_new [B, K, H]
                                  .Arg<Rank4F32>()      // k cache [B, K, H, S]
                                  .Arg<Rank4F32>()      // v cache [B, K, S, H]
                                  .Arg<Mask>()          // key_mask [B, S]
                                  .Arg<Slot>()          // start []
                                  .Attr<float>("scale")
                                  .Ret<Rank4F32>()      // out [B, K, G, H]
                                  .Ret<Rank4F32>()      // k cache, aliased
                                  .Ret<Rank4F32>());    // v cache, aliased

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdDecodeAttentionBf16,
                              DecodeAttention<ffi::BF16>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank4F32>()      // q, float32
                                  .Arg<Rank3Bf16>()     // k_new
                                  .Arg<Rank3Bf16>()     // v_new
                                  .Arg<Rank4Bf16>()     // k cache
                                  .Arg<Rank4Bf16>()     // v cache
                                  .Arg<Mask>()
                                  .Arg<Slot>()
                                  .Attr<float>("scale")
                                  .Ret<Rank4F32>()      // out, float32
                                  .Ret<Rank4Bf16>()     // k cache
                                  .Ret<Rank4Bf16>());   // v cache
