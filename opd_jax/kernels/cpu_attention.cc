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

// Causal attention of a whole sequence to itself on CPU, forward and
// backward, as XLA:CPU FFI handlers (float32):
//
//   OpdSequenceAttention: out, log-sum-exp of q [B, T, K, G, H] against
//     k, v [B, T, K, H] under key_mask [B, T] and causality
//   OpdSequenceAttentionBackward: dq, dk, dv from the saved out and lse
//     (FlashAttention-2's backward: each block's probabilities recomputed)
//
// Why by hand: XLA:CPU runs the dense path as separate passes over
// [B, K, G, T, S] tensors (scores, mask, max, exp, sum, divide, p.V), each
// at a few GB/s, computes the masked upper triangle too, and faults in
// fresh pages for them; the portable blockwise path pays a loop of small
// thunks per block. Here one (row, kv head) is one unit of work on XLA's
// thread pool: its keys and values are packed once into L2-sized panels,
// and each block of 32 queries computes its scores against the causal
// prefix of keys only, its softmax and its products in place.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__FMA__)
#include <immintrin.h>
#endif

#include "cpu_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace opd_kernels;  // NOLINT: the shared vector helpers

// Query rows per block: its scores (32 x T floats, 135 KB at T = 1056) and
// the packed keys stay in L2.
constexpr int64_t kBlockRows = 32;
// Keys per score tile (two vectors); panels are padded to a multiple.
constexpr int64_t kColTile = 16;

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// a * b + c, fused where the CPU has FMA.
inline Vec8 Fma(Vec8 a, Vec8 b, Vec8 c) {
#if defined(__FMA__)
  return (Vec8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// out[r, j:j+16] = sum_h x[r, h] yt[h, j:j+16] for r < R.
template <int R>
inline void RowColTile(const float* x, int64_t hd, const float* yt,
                       int64_t ldy, float* out, int64_t ldo, int64_t j) {
  Vec8 acc[R][2] = {};
  for (int64_t h = 0; h < hd; ++h) {
    const Vec8 b0 = Load(yt + h * ldy + j), b1 = Load(yt + h * ldy + j + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Vec8 a = Splat(x[r * hd + h]);
      acc[r][0] = Fma(a, b0, acc[r][0]);
      acc[r][1] = Fma(a, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    Store(out + r * ldo + j, acc[r][0]);
    Store(out + r * ldo + j + 8, acc[r][1]);
  }
}

// out[i, :nj] = x[i, :] . yt[:, :nj] for i < ni: x [ni, hd] rows, yt a
// [hd, ldy] panel (columns padded to a multiple of 16), nj a multiple of 16.
void RowsTimesCols(const float* x, int64_t ni, int64_t hd, const float* yt,
                   int64_t ldy, int64_t nj, float* out, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= ni; i += 4) {
    for (int64_t j = 0; j < nj; j += kColTile) {
      RowColTile<4>(x + i * hd, hd, yt, ldy, out + i * ldo, ldo, j);
    }
  }
  for (; i < ni; ++i) {
    for (int64_t j = 0; j < nj; j += kColTile) {
      RowColTile<1>(x + i * hd, hd, yt, ldy, out + i * ldo, ldo, j);
    }
  }
}

// out[r, h0:h0+8V] (+)= sum_j a[r, j] m[j, h0:h0+8V] for r < R.
template <int R, int V>
inline void RowsTimesRowsTile(const float* a, int64_t lda, const float* m,
                              int64_t hd, int64_t nj, float* out, int64_t h0,
                              bool accumulate) {
  Vec8 acc[R][V] = {};
  for (int64_t j = 0; j < nj; ++j) {
    Vec8 mv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) mv[v] = Load(m + j * hd + h0 + 8 * v);
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const Vec8 s = Splat(a[r * lda + j]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = Fma(s, mv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      float* o = out + r * hd + h0 + 8 * v;
      Store(o, accumulate ? Load(o) + acc[r][v] : acc[r][v]);
    }
  }
}

template <int V>
void RowsTimesRowsStrip(const float* a, int64_t ni, int64_t lda,
                        const float* m, int64_t nj, int64_t hd, float* out,
                        int64_t h0, bool accumulate) {
  int64_t i = 0;
  for (; i + 2 <= ni; i += 2) {
    RowsTimesRowsTile<2, V>(a + i * lda, lda, m, hd, nj, out + i * hd, h0,
                            accumulate);
  }
  if (i < ni) {
    RowsTimesRowsTile<1, V>(a + i * lda, lda, m, hd, nj, out + i * hd, h0,
                            accumulate);
  }
}

// out[i, :] (+)= sum_{j < nj} a[i, j] m[j, :] for i < ni: a [ni, lda],
// m [nj, hd] rows, out [ni, hd]; hd a multiple of 8.
void RowsTimesRows(const float* a, int64_t ni, int64_t lda, const float* m,
                   int64_t nj, int64_t hd, float* out, bool accumulate) {
  int64_t h0 = 0;
  for (; h0 + 32 <= hd; h0 += 32) {
    RowsTimesRowsStrip<4>(a, ni, lda, m, nj, hd, out, h0, accumulate);
  }
  for (; h0 < hd; h0 += 8) {
    RowsTimesRowsStrip<1>(a, ni, lda, m, nj, hd, out, h0, accumulate);
  }
}

struct Shape {
  int64_t b, t, kv, g, h;
  // Offsets of q / out [B, T, K, G, H] and k / v [B, T, K, H] rows.
  int64_t QRow(int64_t bi, int64_t ti, int64_t ki, int64_t gi) const {
    return (((bi * t + ti) * kv + ki) * g + gi) * h;
  }
  int64_t KRow(int64_t bi, int64_t ki, int64_t ti) const {
    return ((bi * t + ti) * kv + ki) * h;
  }
  int64_t Lse(int64_t bi, int64_t ki, int64_t gi, int64_t ti) const {
    return ((bi * kv + ki) * g + gi) * t + ti;
  }
};

// One (row, kv head)'s keys or values: as a [H, tp] panel (transposed,
// zero columns past T) and / or as contiguous [T, H] rows.
void PackTransposed(const Shape& s, const float* x, int64_t bi, int64_t ki,
                    int64_t tp, float* panel) {
  std::fill(panel, panel + s.h * tp, 0.0f);
  for (int64_t ti = 0; ti < s.t; ++ti) {
    const float* row = x + s.KRow(bi, ki, ti);
    for (int64_t hi = 0; hi < s.h; ++hi) panel[hi * tp + ti] = row[hi];
  }
}

void PackRows(const Shape& s, const float* x, int64_t bi, int64_t ki,
              float* rows) {
  for (int64_t ti = 0; ti < s.t; ++ti) {
    std::memcpy(rows + ti * s.h, x + s.KRow(bi, ki, ti), s.h * sizeof(float));
  }
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Row r of a block (query position t): scores[:n] + bias (0 or -inf per key)
// with keys past t at -inf; returns the row's maximum.
inline float MaskRow(float* row, const float* bias, int64_t t, int64_t n) {
  Vec8 top = Splat(kNegInf);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const Vec8 x = Load(row + c) + Load(bias + c);
    Store(row + c, x);
  }
  for (; c < n; ++c) row[c] += bias[c];
  for (c = t + 1; c < n; ++c) row[c] = kNegInf;
  float best = kNegInf;
  for (c = 0; c + 8 <= n; c += 8) {
    const Vec8 x = Load(row + c);
    top = x > top ? x : top;
  }
  for (int i = 0; i < 8; ++i) best = std::max(best, top[i]);
  for (; c < n; ++c) best = std::max(best, row[c]);
  return best;
}

// 0 for a real key, -inf for a pad, zero past T (never read unmasked).
void KeyBias(const Shape& s, const bool* mask, int64_t bi, int64_t tp,
             float* bias) {
  std::fill(bias, bias + tp, 0.0f);
  for (int64_t ti = 0; ti < s.t; ++ti) {
    bias[ti] = mask[bi * s.t + ti] ? 0.0f : kNegInf;
  }
}

void ForwardUnit(const Shape& s, const float* q, const float* k,
                 const float* v, const bool* mask, float scale, int64_t bi,
                 int64_t ki, float* out, float* lse) {
  const int64_t tp = RoundUp(s.t, kColTile), hd = s.h;
  std::vector<float> kt(hd * tp), vr(s.t * hd), bias(tp);
  std::vector<float> scores(kBlockRows * tp), qs(kBlockRows * hd);
  std::vector<float> o(kBlockRows * hd), inv(kBlockRows);
  PackTransposed(s, k, bi, ki, tp, kt.data());
  PackRows(s, v, bi, ki, vr.data());
  KeyBias(s, mask, bi, tp, bias.data());
  for (int64_t gi = 0; gi < s.g; ++gi) {
    for (int64_t t0 = 0; t0 < s.t; t0 += kBlockRows) {
      const int64_t nr = std::min(kBlockRows, s.t - t0), nk = t0 + nr;
      for (int64_t r = 0; r < nr; ++r) {
        const float* row = q + s.QRow(bi, t0 + r, ki, gi);
        for (int64_t hi = 0; hi < hd; ++hi) qs[r * hd + hi] = row[hi] * scale;
      }
      RowsTimesCols(qs.data(), nr, hd, kt.data(), tp, RoundUp(nk, kColTile),
                    scores.data(), tp);
      for (int64_t r = 0; r < nr; ++r) {
        float* row = scores.data() + r * tp;
        const float top = MaskRow(row, bias.data(), t0 + r, nk);
        float* l = lse + s.Lse(bi, ki, gi, t0 + r);
        if (top == kNegInf) {  // no key allowed (a left pad): output 0
          std::fill(row, row + nk, 0.0f);
          inv[r] = 0.0f;
          *l = std::numeric_limits<float>::infinity();
          continue;
        }
        const float total = ExpRow(row, top, nk);
        inv[r] = 1.0f / total;
        *l = top + std::log(total);
      }
      RowsTimesRows(scores.data(), nr, tp, vr.data(), nk, hd, o.data(),
                    false);
      for (int64_t r = 0; r < nr; ++r) {
        float* dst = out + s.QRow(bi, t0 + r, ki, gi);
        for (int64_t hi = 0; hi < hd; ++hi) dst[hi] = o[r * hd + hi] * inv[r];
      }
    }
  }
}

struct Grads {
  const float* out;
  const float* lse;
  const float* d_out;
  float* dq;
  float* dk;
  float* dv;
};

void BackwardUnit(const Shape& s, const float* q, const float* k,
                  const float* v, const bool* mask, float scale,
                  const Grads& gr, int64_t bi, int64_t ki) {
  const int64_t tp = RoundUp(s.t, kColTile), hd = s.h, br = kBlockRows;
  std::vector<float> kt(hd * tp), vt(hd * tp), kr(s.t * hd), bias(tp);
  std::vector<float> dk(s.t * hd, 0.0f), dv(s.t * hd, 0.0f);
  std::vector<float> p(br * tp), ds(br * tp), pt(tp * br), dst(tp * br);
  std::vector<float> qs(br * hd), dor(br * hd), dqb(br * hd), delta(br);
  PackTransposed(s, k, bi, ki, tp, kt.data());
  PackTransposed(s, v, bi, ki, tp, vt.data());
  PackRows(s, k, bi, ki, kr.data());
  KeyBias(s, mask, bi, tp, bias.data());
  for (int64_t gi = 0; gi < s.g; ++gi) {
    for (int64_t t0 = 0; t0 < s.t; t0 += br) {
      const int64_t nr = std::min(br, s.t - t0), nk = t0 + nr;
      const int64_t nk16 = RoundUp(nk, kColTile);
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t at = s.QRow(bi, t0 + r, ki, gi);
        float d = 0.0f;
        for (int64_t hi = 0; hi < hd; ++hi) {
          qs[r * hd + hi] = q[at + hi] * scale;
          dor[r * hd + hi] = gr.d_out[at + hi];
          d += gr.d_out[at + hi] * gr.out[at + hi];
        }
        delta[r] = d;
      }
      // P = exp(S - lse) on the allowed keys, 0 elsewhere (and on rows with
      // no key, whose lse is +inf); dP = dO . V^T; dS = P (dP - D).
      RowsTimesCols(qs.data(), nr, hd, kt.data(), tp, nk16, p.data(), tp);
      RowsTimesCols(dor.data(), nr, hd, vt.data(), tp, nk16, ds.data(), tp);
      for (int64_t r = 0; r < nr; ++r) {
        float* prow = p.data() + r * tp;
        float* dsrow = ds.data() + r * tp;
        MaskRow(prow, bias.data(), t0 + r, nk);
        ExpRow(prow, gr.lse[s.Lse(bi, ki, gi, t0 + r)], nk);
        for (int64_t c = 0; c < nk; ++c) {
          dsrow[c] = prow[c] * (dsrow[c] - delta[r]);
        }
      }
      // dQ = scale dS . K.
      RowsTimesRows(ds.data(), nr, tp, kr.data(), nk, hd, dqb.data(), false);
      for (int64_t r = 0; r < nr; ++r) {
        float* dst = gr.dq + s.QRow(bi, t0 + r, ki, gi);
        for (int64_t hi = 0; hi < hd; ++hi) dst[hi] = dqb[r * hd + hi] * scale;
      }
      // dV += P^T . dO and dK += dS^T . (scale Q), over the block's keys.
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t c = 0; c < nk; ++c) {
          pt[c * br + r] = p[r * tp + c];
          dst[c * br + r] = ds[r * tp + c];
        }
      }
      RowsTimesRows(pt.data(), nk, br, dor.data(), nr, hd, dv.data(), true);
      RowsTimesRows(dst.data(), nk, br, qs.data(), nr, hd, dk.data(), true);
    }
  }
  for (int64_t ti = 0; ti < s.t; ++ti) {
    std::memcpy(gr.dk + s.KRow(bi, ki, ti), dk.data() + ti * hd,
                hd * sizeof(float));
    std::memcpy(gr.dv + s.KRow(bi, ki, ti), dv.data() + ti * hd,
                hd * sizeof(float));
  }
}

using Rank5 = ffi::Buffer<ffi::F32, 5>;
using Rank4 = ffi::Buffer<ffi::F32, 4>;
using Mask = ffi::Buffer<ffi::PRED, 2>;

ffi::Error CheckShapes(const Rank5& q, const Rank4& k, const Rank4& v,
                       const Mask& mask, Shape* s) {
  const auto qd = q.dimensions();
  *s = Shape{qd[0], qd[1], qd[2], qd[3], qd[4]};
  const auto kd = k.dimensions(), vd = v.dimensions(), md = mask.dimensions();
  for (const auto& d : {kd, vd}) {
    if (d[0] != s->b || d[1] != s->t || d[2] != s->kv || d[3] != s->h) {
      return ffi::Error::InvalidArgument(
          "opd_sequence_attention: k and v must be [B, T, K, H] of q's");
    }
  }
  if (md[0] != s->b || md[1] != s->t) {
    return ffi::Error::InvalidArgument(
        "opd_sequence_attention: key_mask must be [B, T]");
  }
  if (s->h % 8 != 0) {
    return ffi::Error::InvalidArgument(
        "opd_sequence_attention: head_dim must be a multiple of 8");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, Rank5 q, Rank4 k, Rank4 v, Mask mask,
                   float scale, ffi::ResultBuffer<ffi::F32, 5> out,
                   ffi::ResultBuffer<ffi::F32, 4> lse) {
  Shape s;
  if (ffi::Error e = CheckShapes(q, k, v, mask, &s); e.failure()) return e;
  if (s.b * s.t * s.kv * s.g == 0) return ffi::Error::Success();
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const bool* mp = mask.typed_data();
  float *op = out->typed_data(), *lp = lse->typed_data();
  ParallelFor(pool, s.b * s.kv, 1, [=](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      ForwardUnit(s, qp, kp, vp, mp, scale, u / s.kv, u % s.kv, op, lp);
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, Rank5 q, Rank4 k, Rank4 v, Mask mask,
                    Rank5 out, Rank4 lse, Rank5 d_out, float scale,
                    ffi::ResultBuffer<ffi::F32, 5> dq,
                    ffi::ResultBuffer<ffi::F32, 4> dk,
                    ffi::ResultBuffer<ffi::F32, 4> dv) {
  Shape s;
  if (ffi::Error e = CheckShapes(q, k, v, mask, &s); e.failure()) return e;
  if (s.b * s.t * s.kv * s.g == 0) return ffi::Error::Success();
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const bool* mp = mask.typed_data();
  const Grads gr{out.typed_data(),  lse.typed_data(), d_out.typed_data(),
                 dq->typed_data(), dk->typed_data(),  dv->typed_data()};
  ParallelFor(pool, s.b * s.kv, 1, [=](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      BackwardUnit(s, qp, kp, vp, mp, scale, gr, u / s.kv, u % s.kv);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdSequenceAttention, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank5>()     // q [B, T, K, G, H]
                                  .Arg<Rank4>()     // k [B, T, K, H]
                                  .Arg<Rank4>()     // v [B, T, K, H]
                                  .Arg<Mask>()      // key_mask [B, T]
                                  .Attr<float>("scale")
                                  .Ret<Rank5>()     // out [B, T, K, G, H]
                                  .Ret<Rank4>());   // lse [B, K, G, T]

XLA_FFI_DEFINE_HANDLER_SYMBOL(OpdSequenceAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank5>()     // q
                                  .Arg<Rank4>()     // k
                                  .Arg<Rank4>()     // v
                                  .Arg<Mask>()      // key_mask
                                  .Arg<Rank5>()     // out (forward's)
                                  .Arg<Rank4>()     // lse (forward's)
                                  .Arg<Rank5>()     // d_out
                                  .Attr<float>("scale")
                                  .Ret<Rank5>()     // dq
                                  .Ret<Rank4>()     // dk
                                  .Ret<Rank4>());   // dv
