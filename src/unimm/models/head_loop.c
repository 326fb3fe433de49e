/* MAR's diffusion-head sampling loop in one call (loaded by head_loop.py; see its docstring).

   For every row of the modulation table, every step of an affine sampler:
     h = x_in(x);  for each block: h += gate * W2 silu(W1 (shift + LN(h) * scale1) + b1) + b2
     out = W_out (shift + LN(h) * scale1) + b_out
     guided:   x <- a x + b (out_u + s (out_c - out_u)) + c noise     (rows j and M + j: the condition's, the null)
     unguided: x <- a x + b out + c noise                             (row j, its own x)
   (shift, scale1 = 1 + scale, gate) come from the modulation table [levels, rows, K], K = 3 W depth + 2 W.
   Weights are transposed, [in, out]. The width W must be a multiple of 16. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

#define LOAD(p) (*(const v16u *)(p))
#define STORE(p, v) (*(v16u *)(p) = (v))
#define MAX_WIDTH 1024

/* Lanes per block: the rows one weight load serves. 4 lanes x 4 column vectors = 16 accumulators need AVX-512's
   32 vector registers; with 16 (AVX2, where a 64-byte vector is two registers) 2 lanes keep them in registers. */
#ifdef __AVX512F__
#define LANES 4
#else
#define LANES 2
#endif

/* y_l[o] = bias[o] + sum_i x_l[i] wt[i][o] for the n lanes l < n <= LANES; out % 16 == 0. Each lane's sum runs in
   the same order whatever n is, so a row's result does not depend on which rows share its block. */
static inline __attribute__((always_inline)) void linear_n(const int n, int in, int out, const float *restrict wt,
                                                           const float *restrict bias, const float *const *x,
                                                           float *const *y) {
    int o = 0;
    for (; o + 64 <= out; o += 64) {
        const v16 b0 = LOAD(bias + o), b1 = LOAD(bias + o + 16), b2 = LOAD(bias + o + 32), b3 = LOAD(bias + o + 48);
        v16 acc[LANES][4];
        for (int l = 0; l < n; l++) {
            acc[l][0] = b0; acc[l][1] = b1; acc[l][2] = b2; acc[l][3] = b3;
        }
        for (int i = 0; i < in; i++) {
            const float *w = wt + (size_t)i * out + o;
            const v16 w0 = LOAD(w), w1 = LOAD(w + 16), w2 = LOAD(w + 32), w3 = LOAD(w + 48);
            for (int l = 0; l < n; l++) {
                const float s = x[l][i];
                acc[l][0] += s * w0; acc[l][1] += s * w1; acc[l][2] += s * w2; acc[l][3] += s * w3;
            }
        }
        for (int l = 0; l < n; l++) {
            STORE(y[l] + o, acc[l][0]); STORE(y[l] + o + 16, acc[l][1]);
            STORE(y[l] + o + 32, acc[l][2]); STORE(y[l] + o + 48, acc[l][3]);
        }
    }
    for (; o < out; o += 16) {
        const v16 b = LOAD(bias + o);
        v16 acc[LANES];
        for (int l = 0; l < n; l++) acc[l] = b;
        for (int i = 0; i < in; i++) {
            const v16 w = LOAD(wt + (size_t)i * out + o);
            for (int l = 0; l < n; l++) acc[l] += x[l][i] * w;
        }
        for (int l = 0; l < n; l++) STORE(y[l] + o, acc[l]);
    }
}

/* y[p] = bias[p] + sum_i x[i] wt[i][p], any out (the head's few output channels). */
static void linear_narrow(int in, int out, const float *restrict wt, const float *restrict bias,
                          const float *restrict x, float *restrict y) {
    for (int p = 0; p < out; p++) y[p] = bias[p];
    for (int i = 0; i < in; i++)
        for (int p = 0; p < out; p++) y[p] += x[i] * wt[(size_t)i * out + p];
}

/* u = shift + LN(h) * scale1 (LayerNorm without affine, eps 1e-6). */
static void modulated_norm(int w, const float *restrict h, const float *restrict shift,
                           const float *restrict scale1, float *restrict u) {
    float mean = 0.f, var = 0.f;
    for (int i = 0; i < w; i++) mean += h[i];
    mean /= (float)w;
    for (int i = 0; i < w; i++) var += (h[i] - mean) * (h[i] - mean);
    float rstd = 1.f / sqrtf(var / (float)w + 1e-6f);
    for (int i = 0; i < w; i++) u[i] = shift[i] + (h[i] - mean) * rstd * scale1[i];
}

static void silu(int n, float *restrict v) {
#pragma omp simd
    for (int i = 0; i < n; i++) v[i] = v[i] / (1.f + expf(-v[i]));
}

struct weights {
    int P, W, depth;
    const float *xin_wt, *xin_b, *w1, *b1, *w2, *b2, *out_wt, *out_b;
};

/* One evaluation of the head for n lanes: inputs x[l] [P] with modulation rows mod[l] [K] -> o[l] [P]. */
static inline __attribute__((always_inline)) void head_n(const int n, const struct weights *H,
                                                         const float *const *mod, const float *const *x,
                                                         float *const *o) {
    const int P = H->P, W = H->W;
    float hs[LANES][MAX_WIDTH], us[LANES][MAX_WIDTH], vs[LANES][MAX_WIDTH]; /* 48 kB of stack at 4 lanes */
    float *h[LANES], *u[LANES], *v[LANES];
    for (int l = 0; l < LANES; l++) h[l] = hs[l], u[l] = us[l], v[l] = vs[l];
    const size_t ww = (size_t)W * W;
    linear_n(n, P, W, H->xin_wt, H->xin_b, x, h);
    for (int d = 0; d < H->depth; d++) {
        for (int l = 0; l < n; l++) {
            const float *m = mod[l] + (size_t)3 * W * d;
            modulated_norm(W, h[l], m, m + W, u[l]);
        }
        linear_n(n, W, W, H->w1 + d * ww, H->b1 + (size_t)d * W, (const float *const *)u, v);
        for (int l = 0; l < n; l++) silu(W, v[l]);
        linear_n(n, W, W, H->w2 + d * ww, H->b2 + (size_t)d * W, (const float *const *)v, u);
        for (int l = 0; l < n; l++) {
            const float *g = mod[l] + (size_t)3 * W * d + 2 * W;
            for (int i = 0; i < W; i++) h[l][i] += g[i] * u[l][i];
        }
    }
    for (int l = 0; l < n; l++) {
        const float *m = mod[l] + (size_t)3 * W * H->depth;
        modulated_norm(W, h[l], m, m + W, u[l]);
        linear_narrow(W, P, H->out_wt, H->out_b, u[l], o[l]);
    }
}

/* head_n for a run-time n, each case compiled with its lane count fixed. */
static void head_block(int n, const struct weights *H, const float *const *mod, const float *const *x,
                       float *const *o) {
    switch (n) {
    case 1: head_n(1, H, mod, x, o); break;
#if LANES >= 2
    case 2: head_n(2, H, mod, x, o); break;
#endif
#if LANES >= 4
    case 3: head_n(3, H, mod, x, o); break;
    case 4: head_n(4, H, mod, x, o); break;
#endif
    }
}

/* The whole loop. x [M, P] (in / out); table [levels, R, K] with R = 2M (guided: the condition's rows first) or
   M; level [steps]; coef [steps, 3] = (a, b, c); noise [steps, M, P] (zero where a step draws none). At each step
   the R rows' head evaluations are split evenly over `threads` OpenMP threads (built with -fopenmp: PyTorch's own
   runtime, libgomp.so.1, already loaded, so its pool is reused), each thread taking its rows in blocks of up to
   LANES; after a barrier each thread updates its share of the M states, and a second barrier ends the step. (A
   guided state needs its two rows' outputs, which may come from two threads: hence the barriers.) Returns 0, -1
   when the width is not supported, -2 when the outputs' buffer cannot be allocated. */
int head_loop(int M, int guided, int P, int W, int depth, int steps, int threads, float scale,
              const float *xin_wt, const float *xin_b, const float *w1, const float *b1, const float *w2,
              const float *b2, const float *out_wt, const float *out_b, const float *table, const int64_t *level,
              const float *coef, const float *noise, float *x) {
    if (W % 16 != 0 || W > MAX_WIDTH || P > MAX_WIDTH) return -1;
    const int R = guided ? 2 * M : M, K = 3 * W * depth + 2 * W;
    float *out = malloc(sizeof(float) * (size_t)R * (size_t)P);
    if (out == NULL) return -2;
    const struct weights H = {P, W, depth, xin_wt, xin_b, w1, b1, w2, b2, out_wt, out_b};
    int team = threads < 1 ? 1 : threads;
    if (team > R) team = R;
#pragma omp parallel num_threads(team) if (team > 1)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        const int r0 = (int)((int64_t)t * R / nt), r1 = (int)((int64_t)(t + 1) * R / nt);
        const int j0 = (int)((int64_t)t * M / nt), j1 = (int)((int64_t)(t + 1) * M / nt);
        for (int k = 0; k < steps; k++) {
            const float *row = table + (size_t)level[k] * R * K;
            for (int r = r0; r < r1; r += LANES) {
                const int n = r1 - r < LANES ? r1 - r : LANES;
                const float *xs[LANES], *ms[LANES];
                float *os[LANES];
                for (int l = 0; l < n; l++) {
                    xs[l] = x + (size_t)(guided ? (r + l) % M : r + l) * P;
                    ms[l] = row + (size_t)(r + l) * K;
                    os[l] = out + (size_t)(r + l) * P;
                }
                head_block(n, &H, ms, xs, os);
            }
#pragma omp barrier
            const float a = coef[3 * k], b = coef[3 * k + 1], c = coef[3 * k + 2];
            for (int j = j0; j < j1; j++) {
                float *xj = x + (size_t)j * P;
                const float *oc = out + (size_t)j * P, *nj = noise + ((size_t)k * M + j) * P;
                if (guided) {
                    const float *ou = out + (size_t)(M + j) * P;
                    for (int p = 0; p < P; p++) xj[p] = a * xj[p] + b * (ou[p] + scale * (oc[p] - ou[p])) + c * nj[p];
                } else {
                    for (int p = 0; p < P; p++) xj[p] = a * xj[p] + b * oc[p] + c * nj[p];
                }
            }
#pragma omp barrier
        }
    }
    free(out);
    return 0;
}
