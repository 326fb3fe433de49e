/* MAR's diffusion-head sampling loop in one call (loaded by head_loop.py; see its docstring).

   For each pair of lanes, every step of an affine sampler:
     h = x_in(x);  for each block: h += gate * W2 silu(W1 (shift + LN(h) * scale1) + b1) + b2
     out = W_out (shift + LN(h) * scale1) + b_out
     guided:   x <- a x + b (out_u + s (out_c - out_u)) + c noise     (lanes: the condition's and the null row)
     unguided: x <- a x + b out + c noise                             (lanes: two rows, each its own x)
   (shift, scale1 = 1 + scale, gate) come from the modulation table [levels, rows, K], K = 3 W depth + 2 W.
   Weights are transposed, [in, out]. The width W must be a multiple of 16. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

#define LOAD(p) (*(const v16u *)(p))
#define STORE(p, v) (*(v16u *)(p) = (v))
#define MAX_WIDTH 1024

/* y_l[o] = bias[o] + sum_i x_l[i] wt[i][o] for the two lanes l = 0, 1; out % 16 == 0. */
static void linear2(int in, int out, const float *restrict wt, const float *restrict bias, const float *x0,
                    const float *x1, float *restrict y0, float *restrict y1) {
    int o = 0;
    for (; o + 64 <= out; o += 64) {
        v16 a0 = LOAD(bias + o), a1 = LOAD(bias + o + 16), a2 = LOAD(bias + o + 32), a3 = LOAD(bias + o + 48);
        v16 c0 = a0, c1 = a1, c2 = a2, c3 = a3;
        for (int i = 0; i < in; i++) {
            const float *w = wt + (size_t)i * out + o;
            v16 w0 = LOAD(w), w1 = LOAD(w + 16), w2 = LOAD(w + 32), w3 = LOAD(w + 48);
            float s = x0[i], t = x1[i];
            a0 += s * w0; a1 += s * w1; a2 += s * w2; a3 += s * w3;
            c0 += t * w0; c1 += t * w1; c2 += t * w2; c3 += t * w3;
        }
        STORE(y0 + o, a0); STORE(y0 + o + 16, a1); STORE(y0 + o + 32, a2); STORE(y0 + o + 48, a3);
        STORE(y1 + o, c0); STORE(y1 + o + 16, c1); STORE(y1 + o + 32, c2); STORE(y1 + o + 48, c3);
    }
    for (; o < out; o += 16) {
        v16 a = LOAD(bias + o), c = a;
        for (int i = 0; i < in; i++) {
            v16 w = LOAD(wt + (size_t)i * out + o);
            a += x0[i] * w;
            c += x1[i] * w;
        }
        STORE(y0 + o, a);
        STORE(y1 + o, c);
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

/* One evaluation of the head for two lanes: inputs x0, x1 [P] with modulation rows mod0, mod1 [K] -> o0, o1 [P]. */
static void head2(int P, int W, int depth, const float *xin_wt, const float *xin_b, const float *w1,
                  const float *b1, const float *w2, const float *b2, const float *out_wt, const float *out_b,
                  const float *mod0, const float *mod1, const float *x0, const float *x1, float *o0, float *o1) {
    float h0[MAX_WIDTH], h1[MAX_WIDTH], u0[MAX_WIDTH], u1[MAX_WIDTH], v0[MAX_WIDTH], v1[MAX_WIDTH];
    const size_t ww = (size_t)W * W;
    linear2(P, W, xin_wt, xin_b, x0, x1, h0, h1);
    for (int d = 0; d < depth; d++) {
        const float *m0 = mod0 + (size_t)3 * W * d, *m1 = mod1 + (size_t)3 * W * d;
        modulated_norm(W, h0, m0, m0 + W, u0);
        modulated_norm(W, h1, m1, m1 + W, u1);
        linear2(W, W, w1 + d * ww, b1 + (size_t)d * W, u0, u1, v0, v1);
        silu(W, v0);
        silu(W, v1);
        linear2(W, W, w2 + d * ww, b2 + (size_t)d * W, v0, v1, u0, u1);
        const float *g0 = m0 + 2 * W, *g1 = m1 + 2 * W;
        for (int i = 0; i < W; i++) {
            h0[i] += g0[i] * u0[i];
            h1[i] += g1[i] * u1[i];
        }
    }
    const float *m0 = mod0 + (size_t)3 * W * depth, *m1 = mod1 + (size_t)3 * W * depth;
    modulated_norm(W, h0, m0, m0 + W, u0);
    modulated_norm(W, h1, m1, m1 + W, u1);
    linear_narrow(W, P, out_wt, out_b, u0, o0);
    linear_narrow(W, P, out_wt, out_b, u1, o1);
}

struct loop {
    int M, guided, P, W, depth, steps;
    float scale;
    const float *xin_wt, *xin_b, *w1, *b1, *w2, *b2, *out_wt, *out_b, *table, *coef, *noise;
    const int64_t *level;
    float *x;
};

/* Every step for one pair of lanes: guided, pair j is row j and its null row M + j (one state x_j); unguided,
   pair j is rows 2j and 2j + 1 (the last one alone when M is odd). */
static void run_pair(const struct loop *L, int pair) {
    const int M = L->M, P = L->P, W = L->W, R = L->guided ? 2 * M : M, K = 3 * W * L->depth + 2 * W;
    float o0[MAX_WIDTH], o1[MAX_WIDTH];
    const int j = L->guided ? pair : 2 * pair;
    const int j1 = L->guided ? M + j : (j + 1 < M ? j + 1 : j); /* the second lane's table row */
    float *xa = L->x + (size_t)j * P, *xb = L->guided ? xa : L->x + (size_t)j1 * P;
    for (int k = 0; k < L->steps; k++) {
        const float *row = L->table + (size_t)L->level[k] * R * K;
        head2(P, W, L->depth, L->xin_wt, L->xin_b, L->w1, L->b1, L->w2, L->b2, L->out_wt, L->out_b,
              row + (size_t)j * K, row + (size_t)j1 * K, xa, xb, o0, o1);
        const float a = L->coef[3 * k], b = L->coef[3 * k + 1], c = L->coef[3 * k + 2], s = L->scale;
        const float *na = L->noise + ((size_t)k * M + j) * P;
        if (L->guided) {
            for (int p = 0; p < P; p++) xa[p] = a * xa[p] + b * (o1[p] + s * (o0[p] - o1[p])) + c * na[p];
        } else {
            const float *nb = L->noise + ((size_t)k * M + j1) * P;
            for (int p = 0; p < P; p++) xa[p] = a * xa[p] + b * o0[p] + c * na[p];
            if (j1 != j)
                for (int p = 0; p < P; p++) xb[p] = a * xb[p] + b * o1[p] + c * nb[p];
        }
    }
}

/* The whole loop. x [M, P] (in / out); table [levels, R, K] with R = 2M (guided: the condition's rows first) or
   M; level [steps]; coef [steps, 3] = (a, b, c); noise [steps, M, P] (zero where a step draws none). The pairs
   share nothing, so they are split over `threads` OpenMP threads (built with -fopenmp: PyTorch's own runtime,
   libgomp.so.1, already loaded, so its pool is reused). Returns 0, or -1 when the width is not supported. */
int head_loop(int M, int guided, int P, int W, int depth, int steps, int threads, float scale,
              const float *xin_wt, const float *xin_b, const float *w1, const float *b1, const float *w2,
              const float *b2, const float *out_wt, const float *out_b, const float *table, const int64_t *level,
              const float *coef, const float *noise, float *x) {
    if (W % 16 != 0 || W > MAX_WIDTH || P > MAX_WIDTH) return -1;
    const int pairs = guided ? M : (M + 1) / 2;
    const struct loop L = {M, guided, P, W, depth, steps, scale, xin_wt, xin_b, w1, b1, w2, b2, out_wt, out_b,
                           table, coef, noise, level, x};
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && pairs > 1)
    for (int pair = 0; pair < pairs; pair++) run_pair(&L, pair);
    return 0;
}
