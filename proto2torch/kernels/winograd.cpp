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
// own cache; the others go block by block, with the 36 products split between the threads.

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
inline void input_transform(const float* const* d, float* v, int64_t ldv, int64_t n) {
  float t[36][kChunk];
  for (int j = 0; j < 6; ++j) {
    const float *d0 = d[j], *d1 = d[6 + j], *d2 = d[12 + j], *d3 = d[18 + j], *d4 = d[24 + j], *d5 = d[30 + j];
    for (int64_t c = 0; c < n; ++c) {
      t[j][c] = 4 * d0[c] - 5 * d2[c] + d4[c];
      t[6 + j][c] = -4 * (d1[c] + d2[c]) + d3[c] + d4[c];
      t[12 + j][c] = 4 * (d1[c] - d2[c]) - d3[c] + d4[c];
      t[18 + j][c] = -2 * (d1[c] - d3[c]) - d2[c] + d4[c];
      t[24 + j][c] = 2 * (d1[c] - d3[c]) - d2[c] + d4[c];
      t[30 + j][c] = 4 * d1[c] - 5 * d3[c] + d5[c];
    }
  }
  for (int i = 0; i < 6; ++i) {
    const float *t0 = t[i * 6], *t1 = t[i * 6 + 1], *t2 = t[i * 6 + 2], *t3 = t[i * 6 + 3], *t4 = t[i * 6 + 4], *t5 = t[i * 6 + 5];
    float* v0 = v + i * 6 * ldv;
    for (int64_t c = 0; c < n; ++c) {
      v0[c] = 4 * t0[c] - 5 * t2[c] + t4[c];
      v0[ldv + c] = -4 * (t1[c] + t2[c]) + t3[c] + t4[c];
      v0[2 * ldv + c] = 4 * (t1[c] - t2[c]) - t3[c] + t4[c];
      v0[3 * ldv + c] = -2 * (t1[c] - t3[c]) - t2[c] + t4[c];
      v0[4 * ldv + c] = 2 * (t1[c] - t3[c]) - t2[c] + t4[c];
      v0[5 * ldv + c] = 4 * t1[c] - 5 * t3[c] + t5[c];
    }
  }
}

// out[p][k] = (A^T m A)[p] for one tile (p the 16 outputs, row-major 4x4), over n <= kChunk channels.
inline void output_transform(const float* m, int64_t ldm, float out[16][kChunk], int64_t n) {
  float t[24][kChunk];
  for (int j = 0; j < 6; ++j) {
    const float *m0 = m + j * ldm, *m1 = m + (6 + j) * ldm, *m2 = m + (12 + j) * ldm;
    const float *m3 = m + (18 + j) * ldm, *m4 = m + (24 + j) * ldm, *m5 = m + (30 + j) * ldm;
    for (int64_t c = 0; c < n; ++c) {
      const float a = m1[c] + m2[c], b = m1[c] - m2[c], e = m3[c] + m4[c], f = m3[c] - m4[c];
      t[j][c] = m0[c] + a + e;
      t[6 + j][c] = b + 2 * f;
      t[12 + j][c] = a + 4 * e;
      t[18 + j][c] = b + 8 * f + m5[c];
    }
  }
  for (int i = 0; i < 4; ++i) {
    const float *t0 = t[i * 6], *t1 = t[i * 6 + 1], *t2 = t[i * 6 + 2], *t3 = t[i * 6 + 3], *t4 = t[i * 6 + 4], *t5 = t[i * 6 + 5];
    for (int64_t c = 0; c < n; ++c) {
      const float a = t1[c] + t2[c], b = t1[c] - t2[c], e = t3[c] + t4[c], f = t3[c] - t4[c];
      out[i * 4][c] = t0[c] + a + e;
      out[i * 4 + 1][c] = b + 2 * f;
      out[i * 4 + 2][c] = a + 4 * e;
      out[i * 4 + 3][c] = b + 8 * f + t5[c];
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
    float out[16][kChunk];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t = t0 + b, n = t / (th * tw), r = t % (th * tw);
      const int64_t oy0 = (r / tw) * 4, ox0 = (r % tw) * 4;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int64_t nk = std::min(kChunk, K - k0);
        output_transform(m + b * Kp + k0, ldt * Kp, out, nk);
        for (int i = 0; i < 4 && oy0 + i < Ho; ++i)
          for (int j = 0; j < 4 && ox0 + j < Wo; ++j) {
            float* dst = yp + ((n * Ho + oy0 + i) * Wo + ox0 + j) * K + k0;
            const float* src = out[i * 4 + j];
            if (bp) for (int64_t k = 0; k < nk; ++k) dst[k] = src[k] + bp[k0 + k];
            else std::memcpy(dst, src, nk * sizeof(float));
            if (relu) for (int64_t k = 0; k < nk; ++k) dst[k] = std::max(dst[k], 0.0f);
          }
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
