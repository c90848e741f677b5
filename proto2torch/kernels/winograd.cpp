// Winograd F(4x4, 3x3) convolution for CPUs: 3x3 kernels, stride 1, no dilation, one group, float32,
// channels_last (NHWC) input and output.  Compiled by proto2torch.kernels the first time it is needed.
//
// Each 6x6 input tile d becomes V = B^T d B; the weights were transformed ahead of time (U = G g G^T,
// in Python, in float64) and packed as [36][K/16][C * 16]; for each of the 36 positions xi,
// M[xi] = V[xi] x U[xi] is a plain matrix product over the input channels, done by a 6x16 register-
// blocked AVX2 kernel; each 4x4 output tile is A^T M A, plus the bias, then the ReLU when asked for.
// That is 36 multiply-adds per 16 outputs and input channel where a direct 3x3 convolution does 144.
//
// Threads come from ATen's pool (at::parallel_for), so nothing here competes with oneDNN's threads.
// Layers with small transformed weights run a block of tiles per thread from input to output in its
// own cache; the others go block by block, with the 36 products split between the threads.  The product
// kernel prefetches the next panel of weights while it uses this one (a prefetch never faults, past the
// end of the weights too): at batch 1 the 512-channel layers' 36 MB of weights stream from memory.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kChunk = 64;          // channels a transform works on at once
constexpr int64_t kBlock = 64;          // tiles per block when the threads share the products
constexpr int64_t kOwnBlock = 24;       // tiles per block when each thread runs its own blocks
constexpr int64_t kOwnMaxWeights = 3 << 20;  // bytes of transformed weights that stay in cache

// v[xi][c] = (B^T d B)[xi] for one tile, over n <= kChunk channels; d[i] points at the n channels of the
// tile's pixel i (row-major 6x6), ldv is the distance between two positions in v.
inline void input_transform(const float* const* d, float* __restrict__ v, int64_t ldv, int64_t n) {
  int64_t c0 = 0;
#ifdef __AVX2__
  for (; c0 + 8 <= n; c0 += 8) {
    __m256 t[36];
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
    for (int j = 0; j < 6; ++j) {
      const __m256 d0 = _mm256_loadu_ps(d[j] + c0), d1 = _mm256_loadu_ps(d[6 + j] + c0), d2 = _mm256_loadu_ps(d[12 + j] + c0);
      const __m256 d3 = _mm256_loadu_ps(d[18 + j] + c0), d4 = _mm256_loadu_ps(d[24 + j] + c0), d5 = _mm256_loadu_ps(d[30 + j] + c0);
      const __m256 a = _mm256_fnmadd_ps(four, d2, d4), b = _mm256_fnmadd_ps(four, d1, d3);  // d4 - 4 d2, d3 - 4 d1
      const __m256 e = _mm256_sub_ps(d4, d2), f = _mm256_mul_ps(two, _mm256_sub_ps(d1, d3));
      t[j] = _mm256_add_ps(_mm256_fnmadd_ps(five, d2, _mm256_mul_ps(four, d0)), d4);
      t[6 + j] = _mm256_add_ps(a, b);
      t[12 + j] = _mm256_sub_ps(a, b);
      t[18 + j] = _mm256_sub_ps(e, f);
      t[24 + j] = _mm256_add_ps(e, f);
      t[30 + j] = _mm256_add_ps(_mm256_fnmadd_ps(five, d3, _mm256_mul_ps(four, d1)), d5);
    }
    for (int i = 0; i < 6; ++i) {
      const __m256 t0 = t[i * 6], t1 = t[i * 6 + 1], t2 = t[i * 6 + 2], t3 = t[i * 6 + 3], t4 = t[i * 6 + 4], t5 = t[i * 6 + 5];
      const __m256 a = _mm256_fnmadd_ps(four, t2, t4), b = _mm256_fnmadd_ps(four, t1, t3);
      const __m256 e = _mm256_sub_ps(t4, t2), f = _mm256_mul_ps(two, _mm256_sub_ps(t1, t3));
      float* vi = v + i * 6 * ldv + c0;
      _mm256_storeu_ps(vi, _mm256_add_ps(_mm256_fnmadd_ps(five, t2, _mm256_mul_ps(four, t0)), t4));
      _mm256_storeu_ps(vi + ldv, _mm256_add_ps(a, b));
      _mm256_storeu_ps(vi + 2 * ldv, _mm256_sub_ps(a, b));
      _mm256_storeu_ps(vi + 3 * ldv, _mm256_sub_ps(e, f));
      _mm256_storeu_ps(vi + 4 * ldv, _mm256_add_ps(e, f));
      _mm256_storeu_ps(vi + 5 * ldv, _mm256_add_ps(_mm256_fnmadd_ps(five, t3, _mm256_mul_ps(four, t1)), t5));
    }
  }
#endif
  for (int64_t c = c0; c < n; ++c) {  // what is left of the channels, one at a time
    float t[36];
    for (int j = 0; j < 6; ++j) {
      const float d0 = d[j][c], d1 = d[6 + j][c], d2 = d[12 + j][c], d3 = d[18 + j][c], d4 = d[24 + j][c], d5 = d[30 + j][c];
      t[j] = 4 * d0 - 5 * d2 + d4;
      t[6 + j] = -4 * (d1 + d2) + d3 + d4;
      t[12 + j] = 4 * (d1 - d2) - d3 + d4;
      t[18 + j] = -2 * (d1 - d3) - d2 + d4;
      t[24 + j] = 2 * (d1 - d3) - d2 + d4;
      t[30 + j] = 4 * d1 - 5 * d3 + d5;
    }
    for (int i = 0; i < 6; ++i) {
      const float *r = t + i * 6;
      float* vi = v + i * 6 * ldv + c;
      vi[0] = 4 * r[0] - 5 * r[2] + r[4];
      vi[ldv] = -4 * (r[1] + r[2]) + r[3] + r[4];
      vi[2 * ldv] = 4 * (r[1] - r[2]) - r[3] + r[4];
      vi[3 * ldv] = -2 * (r[1] - r[3]) - r[2] + r[4];
      vi[4 * ldv] = 2 * (r[1] - r[3]) - r[2] + r[4];
      vi[5 * ldv] = 4 * r[1] - 5 * r[3] + r[5];
    }
  }
}

// dst[p][c] = (A^T m A)[p] + bias[c], then the ReLU if asked for, for one tile (p the 16 outputs,
// row-major 4x4; dst[p] null where the output is past the edge), over n <= kChunk channels.
inline void output_transform(const float* m, int64_t ldm, float* const* dst, const float* bias, bool relu, int64_t n) {
  int64_t c0 = 0;
#ifdef __AVX2__
  const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), eight = _mm256_set1_ps(8.0f), zero = _mm256_setzero_ps();
  for (; c0 + 8 <= n; c0 += 8) {
    __m256 t[24];
    for (int j = 0; j < 6; ++j) {
      const __m256 m0 = _mm256_loadu_ps(m + j * ldm + c0), m1 = _mm256_loadu_ps(m + (6 + j) * ldm + c0), m2 = _mm256_loadu_ps(m + (12 + j) * ldm + c0);
      const __m256 m3 = _mm256_loadu_ps(m + (18 + j) * ldm + c0), m4 = _mm256_loadu_ps(m + (24 + j) * ldm + c0), m5 = _mm256_loadu_ps(m + (30 + j) * ldm + c0);
      const __m256 a = _mm256_add_ps(m1, m2), b = _mm256_sub_ps(m1, m2), e = _mm256_add_ps(m3, m4), f = _mm256_sub_ps(m3, m4);
      t[j] = _mm256_add_ps(_mm256_add_ps(m0, a), e);
      t[6 + j] = _mm256_fmadd_ps(two, f, b);
      t[12 + j] = _mm256_fmadd_ps(four, e, a);
      t[18 + j] = _mm256_add_ps(_mm256_fmadd_ps(eight, f, b), m5);
    }
    const __m256 bv = bias ? _mm256_loadu_ps(bias + c0) : zero;
    for (int i = 0; i < 4; ++i) {
      const __m256 t0 = t[i * 6], t1 = t[i * 6 + 1], t2 = t[i * 6 + 2], t3 = t[i * 6 + 3], t4 = t[i * 6 + 4], t5 = t[i * 6 + 5];
      const __m256 a = _mm256_add_ps(t1, t2), b = _mm256_sub_ps(t1, t2), e = _mm256_add_ps(t3, t4), f = _mm256_sub_ps(t3, t4);
      __m256 y[4] = {_mm256_add_ps(_mm256_add_ps(t0, a), e), _mm256_fmadd_ps(two, f, b), _mm256_fmadd_ps(four, e, a), _mm256_add_ps(_mm256_fmadd_ps(eight, f, b), t5)};
      for (int j = 0; j < 4; ++j) {
        if (!dst[i * 4 + j]) continue;
        __m256 out = _mm256_add_ps(y[j], bv);
        if (relu) out = _mm256_max_ps(out, zero);
        _mm256_storeu_ps(dst[i * 4 + j] + c0, out);
      }
    }
  }
#endif
  for (int64_t c = c0; c < n; ++c) {  // what is left of the channels, one at a time
    float t[24];
    for (int j = 0; j < 6; ++j) {
      const float m0 = m[j * ldm + c], m1 = m[(6 + j) * ldm + c], m2 = m[(12 + j) * ldm + c];
      const float m3 = m[(18 + j) * ldm + c], m4 = m[(24 + j) * ldm + c], m5 = m[(30 + j) * ldm + c];
      const float a = m1 + m2, b = m1 - m2, e = m3 + m4, f = m3 - m4;
      t[j] = m0 + a + e;
      t[6 + j] = b + 2 * f;
      t[12 + j] = a + 4 * e;
      t[18 + j] = b + 8 * f + m5;
    }
    for (int i = 0; i < 4; ++i) {
      const float* r = t + i * 6;
      const float a = r[1] + r[2], b = r[1] - r[2], e = r[3] + r[4], f = r[3] - r[4];
      const float y[4] = {r[0] + a + e, b + 2 * f, a + 4 * e, b + 8 * f + r[5]};
      for (int j = 0; j < 4; ++j) {
        if (!dst[i * 4 + j]) continue;
        const float out = y[j] + (bias ? bias[c] : 0.0f);
        dst[i * 4 + j][c] = relu ? std::max(out, 0.0f) : out;
      }
    }
  }
}

// m[r][0:16] = sum over c of v[r][c] * panel[c][0:16], for R <= 6 rows (tiles): twelve accumulators in registers.
template <int R>
inline void rows_times_panel(const float* v, int64_t ldv, const float* panel, int64_t C, float* m, int64_t ldm) {
#ifdef __AVX2__
  __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0;
  const float *v0 = v, *v1 = v + ldv, *v2 = v + 2 * ldv, *v3 = v + 3 * ldv, *v4 = v + 4 * ldv, *v5 = v + 5 * ldv;
  for (int64_t c = 0; c < C; ++c) {
    _mm_prefetch(reinterpret_cast<const char*>(panel + (C + c) * 16), _MM_HINT_T0);  // the next panel, while this one is in use
    const __m256 u0 = _mm256_loadu_ps(panel + c * 16), u1 = _mm256_loadu_ps(panel + c * 16 + 8);
    __m256 x = _mm256_broadcast_ss(v0 + c);
    a0 = _mm256_fmadd_ps(x, u0, a0), b0 = _mm256_fmadd_ps(x, u1, b0);
    if (R > 1) x = _mm256_broadcast_ss(v1 + c), a1 = _mm256_fmadd_ps(x, u0, a1), b1 = _mm256_fmadd_ps(x, u1, b1);
    if (R > 2) x = _mm256_broadcast_ss(v2 + c), a2 = _mm256_fmadd_ps(x, u0, a2), b2 = _mm256_fmadd_ps(x, u1, b2);
    if (R > 3) x = _mm256_broadcast_ss(v3 + c), a3 = _mm256_fmadd_ps(x, u0, a3), b3 = _mm256_fmadd_ps(x, u1, b3);
    if (R > 4) x = _mm256_broadcast_ss(v4 + c), a4 = _mm256_fmadd_ps(x, u0, a4), b4 = _mm256_fmadd_ps(x, u1, b4);
    if (R > 5) x = _mm256_broadcast_ss(v5 + c), a5 = _mm256_fmadd_ps(x, u0, a5), b5 = _mm256_fmadd_ps(x, u1, b5);
  }
  _mm256_storeu_ps(m, a0), _mm256_storeu_ps(m + 8, b0);
  if (R > 1) _mm256_storeu_ps(m + ldm, a1), _mm256_storeu_ps(m + ldm + 8, b1);
  if (R > 2) _mm256_storeu_ps(m + 2 * ldm, a2), _mm256_storeu_ps(m + 2 * ldm + 8, b2);
  if (R > 3) _mm256_storeu_ps(m + 3 * ldm, a3), _mm256_storeu_ps(m + 3 * ldm + 8, b3);
  if (R > 4) _mm256_storeu_ps(m + 4 * ldm, a4), _mm256_storeu_ps(m + 4 * ldm + 8, b4);
  if (R > 5) _mm256_storeu_ps(m + 5 * ldm, a5), _mm256_storeu_ps(m + 5 * ldm + 8, b5);
#else
  float acc[R][16] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 16; ++j) acc[r][j] += v[r * ldv + c] * panel[c * 16 + j];
  for (int r = 0; r < R; ++r) std::memcpy(m + r * ldm, acc[r], sizeof acc[r]);
#endif
}

// m[nt][Kp] = v[nt][C] x u, u packed as [Kp/16][C][16].
void product(const float* v, int64_t nt, int64_t C, const float* u, int64_t Kp, float* m) {
  for (int64_t k0 = 0; k0 < Kp; k0 += 16) {
    const float* panel = u + k0 * C;
    int64_t r = 0;
    for (; r + 6 <= nt; r += 6) rows_times_panel<6>(v + r * C, C, panel, C, m + r * Kp + k0, Kp);
    const float* vr = v + r * C;
    float* mr = m + r * Kp + k0;
    switch (nt - r) {
      case 5: rows_times_panel<5>(vr, C, panel, C, mr, Kp); break;
      case 4: rows_times_panel<4>(vr, C, panel, C, mr, Kp); break;
      case 3: rows_times_panel<3>(vr, C, panel, C, mr, Kp); break;
      case 2: rows_times_panel<2>(vr, C, panel, C, mr, Kp); break;
      case 1: rows_times_panel<1>(vr, C, panel, C, mr, Kp); break;
      default: break;
    }
  }
}

}  // namespace

// x: [N, C, H, W] float32 (made channels_last); u: [36, Kp/16, C * 16] (each [C][16] a panel); bias: [K] or empty.
at::Tensor winograd_conv(const at::Tensor& input, const at::Tensor& u, const at::Tensor& bias, int64_t K, int64_t pad_h, int64_t pad_w, bool relu) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == at::kFloat && input.device().is_cpu(), "winograd_conv: a 4-d float32 CPU input, got ", input.sizes());
  TORCH_CHECK(u.dim() == 3 && u.size(0) == 36 && u.size(2) == input.size(1) * 16 && u.is_contiguous() && u.scalar_type() == at::kFloat,
              "winograd_conv: transformed weights [36, K/16, ", input.size(1) * 16, "], got ", u.sizes());
  TORCH_CHECK(K > 0 && K <= u.size(1) * 16 && K > u.size(1) * 16 - 16, "winograd_conv: ", K, " outputs do not match the weights");
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || (bias.numel() == K && bias.is_contiguous() && bias.scalar_type() == at::kFloat), "winograd_conv: bias of ", K);
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "winograd_conv: negative padding");
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Kp = u.size(1) * 16;
  const int64_t Ho = H + 2 * pad_h - 2, Wo = W + 2 * pad_w - 2;
  TORCH_CHECK(Ho > 0 && Wo > 0, "winograd_conv: the output of a ", H, "x", W, " input padded by ", pad_h, ",", pad_w, " would be empty");
  at::Tensor y = at::empty({N, K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (N == 0) return y;
  const int64_t th = (Ho + 3) / 4, tw = (Wo + 3) / 4, tiles = N * th * tw;
  const float* xp = x.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  const float* bp = bias.defined() && bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const std::vector<float> zeros(kChunk, 0.0f);  // the padding

  // tiles t0+b0 .. t0+b1-1 into v ([36][ldt][C]; tile t0+b at row b)
  auto tiles_in = [&](float* v, int64_t ldt, int64_t t0, int64_t b0, int64_t b1) {
    const float* d[36];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t = t0 + b, n = t / (th * tw), r = t % (th * tw);
      const int64_t iy0 = (r / tw) * 4 - pad_h, ix0 = (r % tw) * 4 - pad_w;
      for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j) {
            const int64_t iy = iy0 + i, ix = ix0 + j;
            d[i * 6 + j] = (iy < 0 || iy >= H || ix < 0 || ix >= W) ? zeros.data() : xp + ((n * H + iy) * W + ix) * C + c0;
          }
        input_transform(d, v + b * C + c0, ldt * C, std::min(kChunk, C - c0));
      }
    }
  };
  // tiles t0+b0 .. t0+b1-1 from m ([36][ldt][Kp]) into y, with the bias and the ReLU
  auto tiles_out = [&](const float* m, int64_t ldt, int64_t t0, int64_t b0, int64_t b1) {
    float* dst[16];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t = t0 + b, n = t / (th * tw), r = t % (th * tw);
      const int64_t oy0 = (r / tw) * 4, ox0 = (r % tw) * 4;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j)
            dst[i * 4 + j] = (oy0 + i < Ho && ox0 + j < Wo) ? yp + ((n * Ho + oy0 + i) * Wo + ox0 + j) * K + k0 : nullptr;
        output_transform(m + b * Kp + k0, ldt * Kp, dst, bp ? bp + k0 : nullptr, relu, std::min(kChunk, K - k0));
      }
    }
  };

  if (36 * C * Kp * int64_t(sizeof(float)) <= kOwnMaxWeights && tiles >= 4 * at::get_num_threads() * kOwnBlock) {
    const int64_t blocks = (tiles + kOwnBlock - 1) / kOwnBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t q0, int64_t q1) {
      std::vector<float> v(36 * kOwnBlock * C), m(36 * kOwnBlock * Kp);
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t t0 = q * kOwnBlock, nt = std::min(kOwnBlock, tiles - t0);
        tiles_in(v.data(), kOwnBlock, t0, 0, nt);
        for (int64_t xi = 0; xi < 36; ++xi) product(v.data() + xi * kOwnBlock * C, nt, C, up + xi * Kp * C, Kp, m.data() + xi * kOwnBlock * Kp);
        tiles_out(m.data(), kOwnBlock, t0, 0, nt);
      }
    });
    return y;
  }
  const int64_t block = std::min(kBlock, tiles);
  std::vector<float> v(36 * block * C), m(36 * block * Kp);
  for (int64_t t0 = 0; t0 < tiles; t0 += block) {
    const int64_t nt = std::min(block, tiles - t0);
    at::parallel_for(0, nt, 1, [&](int64_t b0, int64_t b1) { tiles_in(v.data(), block, t0, b0, b1); });
    at::parallel_for(0, 36, 1, [&](int64_t x0, int64_t x1) {
      for (int64_t xi = x0; xi < x1; ++xi) product(v.data() + xi * block * C, nt, C, up + xi * Kp * C, Kp, m.data() + xi * block * Kp);
    });
    at::parallel_for(0, nt, 1, [&](int64_t b0, int64_t b1) { tiles_out(m.data(), block, t0, b0, b1); });
  }
  return y;
}

TORCH_LIBRARY_FRAGMENT(proto2torch, m) {
  m.def("winograd_conv(Tensor x, Tensor u, Tensor bias, int K, int pad_h, int pad_w, bool relu) -> Tensor");
}
TORCH_LIBRARY_IMPL(proto2torch, CPU, m) { m.impl("winograd_conv", winograd_conv); }
