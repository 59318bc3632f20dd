"""Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE: principled reliability diagrams via kernel
smoothing"), computed exactly as the reference implementation ``relplot`` (Apple, v1.0.3) does,
but batched over bootstrap resamples and faster (bincount instead of np.add.at, FFT or one matrix
product instead of a direct convolution).

Definition. With the reflected Gaussian kernel K_s on [0, 1] (mass leaving [0, 1] is mirrored
back), the smoothed residual and density are

    r(t) = sum_i K_s(t, c_i) (c_i - y_i),   d(t) = sum_i K_s(t, c_i),

and smECE_s = integral |r(t)| dt / integral d(t) dt, i.e. the mean absolute smoothed miscalibration
weighted by the density of the confidences. smECE is smECE_s at the bandwidth s* that solves
s = smECE_s (found by bisection, 10 halvings, floor 0.001), so the bandwidth adapts to the data.

As in relplot, the records are first spread onto a grid of G = max(2000, round(20/s)) // 2 + 1
points by linear interpolation, convolved there with the kernel (mirrored at 0 and 1),
interpolated to T = max(round(10/s), 200) evaluation points, and a 1e-4 is added to the density.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.sparse
from scipy.signal import fftconvolve

from calbench.metrics.inputs import as_rows, check, int_param, real_param

SEARCH_FLOOR = 0.001  # relplot smECE(eps=0.001): bandwidths below this are accepted outright
SEARCH_STEPS = 10  # relplot search_param(refine=10)
DENS_EPS = 1e-4  # relplot BaseKernelMixin.smooth(eps=0.0001)
MESH = 200  # relplot config.smECE_mesh_pts
# smallest fixed bandwidth accepted: a 100,001-point grid (the bandwidth search stops at 1e-3)
SIGMA_MIN = 1e-4
_MATMUL_MAX = 4_000_000  # use a (T x G) matrix when it is at most this big, else FFT


def grid_size(sigma: float) -> int:
    return max(2000, round(20 / sigma)) // 2 + 1


def eval_size(sigma: float) -> int:
    return max(round(10 / sigma), MESH)


def _kernel(sigma: float, g: int) -> np.ndarray:
    t = np.linspace(0, 1, g)
    return np.exp(-(t - 0.5) * (t - 0.5) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)


def to_grid(values: np.ndarray, weights: np.ndarray, g: int) -> np.ndarray:
    """Spread ``weights`` (R, K) at positions ``values`` (K,) onto g grid points by linear
    interpolation (relplot's smooth_round_to_grid); returns (R, g)."""
    weights = np.atleast_2d(weights)
    scaled = values * (g - 1)
    bins = scaled.astype(np.int64).clip(0, g - 2)
    frac = scaled - bins
    if weights.shape[0] == 1:
        w = weights[0]
        out = np.bincount(bins, (1 - frac) * w, minlength=g)
        out += np.bincount(bins + 1, frac * w, minlength=g)
        return out[None, :]
    k = values.size
    rows = np.concatenate([np.arange(k), np.arange(k)])
    cols = np.concatenate([bins, bins + 1])
    spread = scipy.sparse.csr_matrix((np.concatenate([1 - frac, frac]), (rows, cols)), shape=(k, g))
    return np.asarray((spread.T @ weights.T).T)


def _interp_index(t: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    # relplot kernels.interpolate
    inds = (t * (g - 1)).astype(np.int64).clip(0, g - 2)
    residual = (t - inds / (g - 1)) * (g - 1)
    return inds, residual


def _smooth_fft(grid: np.ndarray, sigma: float, t: np.ndarray) -> np.ndarray:
    """Reflected-kernel convolution of (R, G) grid values, then interpolation at t: (R, T)."""
    g = grid.shape[1]
    ker = _kernel(sigma, g)
    flipped = grid[:, ::-1]
    ext = np.concatenate([flipped[:, :-1], grid, flipped[:, 1:]], axis=1)
    full = fftconvolve(ext, ker[None, :], mode="valid", axes=1)
    smoothed = full[:, g // 2 : g // 2 + g]
    inds, res = _interp_index(t, g)
    return smoothed[:, inds] * (1 - res) + smoothed[:, inds + 1] * res


def smoothing_matrix(
    sigma: float, g: int, t: np.ndarray, cols: np.ndarray | None = None
) -> np.ndarray:
    """The (T, G) linear map of :func:`_smooth_fft` (grid values -> smoothed values at t), or only
    its columns ``cols``, in closed form.

    np.convolve(ext, ker, "valid")[o] = sum_m ext[o + m] ker[G - 1 - m] over the mirrored
    extension ext = (v[G-1..1], v[0..G-1], v[G-2..0]); grid value g therefore reaches output i
    through ker[i + h - g] (itself), ker[i + h + g] (its mirror at 0, g >= 1) and
    ker[i + h + g - 2G + 2] (its mirror at 1, g <= G - 2), h = G // 2, out-of-range taps 0.
    """
    ker = np.append(_kernel(sigma, g), 0.0)  # index g (out of range) -> 0
    inds, res = _interp_index(t, g)
    cols = np.arange(g) if cols is None else np.asarray(cols)
    i = np.unique(np.concatenate([inds, inds + 1]))[:, None]
    h = g // 2
    c = cols[None, :]

    def tap(d: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return ker[np.where(ok & (d >= 0) & (d <= g - 1), d, g)]

    rows = tap(i + h - c, True) + tap(i + h + c, c >= 1) + tap(i + h + c - 2 * g + 2, c <= g - 2)
    where = np.searchsorted(i[:, 0], inds)
    return rows[where] * (1 - res)[:, None] + rows[where + 1] * res[:, None]


def _mirror_source(g: int) -> np.ndarray:
    """Grid index behind each position of the mirrored extension (length 3G - 2)."""
    j = np.arange(3 * g - 2)
    return np.where(j < g - 1, g - 1 - j, np.where(j <= 2 * g - 2, j - (g - 1), 3 * g - 3 - j))


def density_weights(sigma: float, g: int, t: np.ndarray) -> np.ndarray:
    """w (G,) with w . v = sum_t (smoothed v)(t): the adjoint of the smoothing map applied to 1.

    Forward: mirror-extend, convolve with the kernel, slice, interpolate at t. Adjoint: spread the
    interpolation weights back onto the slice, correlate with the kernel, fold the mirror back.
    """
    inds, res = _interp_index(t, g)
    u = np.bincount(inds, 1 - res, minlength=g) + np.bincount(inds + 1, res, minlength=g)
    off = g - 1 + g // 2  # full-convolution index of smoothed[0]
    full = np.zeros(4 * g - 3)
    full[off : off + g] = u
    ker = _kernel(sigma, g)
    # corr[m] = sum_j full[j] ker[j - m]  (full convolution: full[j] = sum_m ext[m] ker[j - m])
    corr = fftconvolve(full, ker[::-1], mode="valid")
    return np.bincount(_mirror_source(g), corr, minlength=g)


class _Smoother:
    """Evaluates smECE_s for many rows and bandwidths, caching what does not depend on the row.

    ``resid`` and ``dens`` are (R, K) weights at positions ``values`` (K,). The smoothed values at
    the T evaluation points are linear in the weights: grid (K -> G, linear interpolation), then
    the reflected convolution and the interpolation to T. For smECE only the residual needs
    smoothing point by point (|r(t)|); the density enters through its total, a dot product with
    :func:`density_weights`. Two batched routes for the residual:

    * few distinct values (verbalized confidences): one (K, T) matrix per bandwidth, so a
      resample costs K * T operations;
    * many: the FFT of each row's mirrored grid is taken once, and each bandwidth costs one
      multiply and one inverse FFT per row.
    """

    def __init__(self, values: np.ndarray, resid: np.ndarray, dens: np.ndarray, cache=None):
        self.values, self.resid, self.dens = values, resid, dens
        self.grids: dict[int, np.ndarray] = {}
        self.spectra: dict[int, np.ndarray] = {}
        # smoothing matrices depend on the values and bandwidth only: share them across blocks
        self.mats: dict[tuple, np.ndarray] = {} if cache is None else cache

    def _compose(self, g: int) -> bool:
        return 2 * self.values.size < g

    def _fft_len(self, g: int) -> int:
        return scipy.fft.next_fast_len(3 * g - 2, real=True)

    def _spectrum(self, g: int) -> np.ndarray:
        """rfft of each residual row's mirrored grid (R, L // 2 + 1)."""
        if g not in self.spectra:
            grid = self.grid(g)[: self.resid.shape[0]]
            ext = grid[:, _mirror_source(g)]
            self.spectra[g] = scipy.fft.rfft(ext, n=self._fft_len(g), axis=1)
        return self.spectra[g]

    def _cached(self, key: tuple, make):
        if key not in self.mats:
            self.mats[key] = make()
        return self.mats[key]

    def _smece_fft(self, sigma: float, g: int, t: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n_fft = self._fft_len(g)
        kspec = self._cached(
            ("kspec", sigma, g), lambda: scipy.fft.rfft(_kernel(sigma, g), n=n_fft)
        )
        w = self._cached(("w", sigma, g, t.size), lambda: density_weights(sigma, g, t))
        full = scipy.fft.irfft(self._spectrum(g)[rows] * kspec, n=n_fft, axis=1)
        off = g - 1 + g // 2
        inds, res = _interp_index(t, g)
        num = full[:, off + inds] * (1 - res) + full[:, off + inds + 1] * res
        den_total = self.grid(g)[rows + self.resid.shape[0]] @ w + t.size * DENS_EPS
        return np.abs(num).sum(axis=1) / den_total

    def _too_big(self, g: int, t: np.ndarray) -> bool:
        return (self.values.size if self._compose(g) else g) * t.size > _MATMUL_MAX

    def grid(self, g: int) -> np.ndarray:
        # residual rows stacked over density rows: one pass for both
        if g not in self.grids:
            self.grids[g] = to_grid(self.values, np.vstack([self.resid, self.dens]), g)
        return self.grids[g]

    def _matrix(self, sigma: float, g: int, t: np.ndarray) -> np.ndarray:
        key = (sigma, g, t.size, float(t[1] - t[0]) if t.size > 1 else 0.0)
        if key not in self.mats:
            if self._compose(g):
                # compose with the K -> G spreading: row k is the response to a unit at values[k]
                scaled = self.values * (g - 1)
                bins = scaled.astype(np.int64).clip(0, g - 2)
                frac = scaled - bins
                cols = np.unique(np.concatenate([bins, bins + 1]))
                a = smoothing_matrix(sigma, g, t, cols)
                lo = np.searchsorted(cols, bins)
                a = (a[:, lo] * (1 - frac) + a[:, lo + 1] * frac).T  # (K, T)
            else:
                a = smoothing_matrix(sigma, g, t).T  # (G, T)
            self.mats[key] = np.ascontiguousarray(a)
        return self.mats[key]

    def _inputs(self, g: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._compose(g):
            return self.resid[rows], self.dens[rows]
        grid = self.grid(g)
        r = self.resid.shape[0]
        return grid[rows], grid[rows + r]

    def _fft(self, sigma: float, rows: np.ndarray, t: np.ndarray):
        grid = self.grid(grid_size(sigma))
        r = self.resid.shape[0]
        out = _smooth_fft(grid[np.concatenate([rows, rows + r])], sigma, t)
        return out[: rows.size], out[rows.size :] + DENS_EPS

    def smooth(self, sigma: float, rows: np.ndarray, t: np.ndarray | None = None):
        """Smoothed residual and density (+ 1e-4) at the points t, for the given rows."""
        g = grid_size(sigma)
        if t is None:
            t = np.linspace(0, 1, eval_size(sigma))
        if rows.size <= 2 or self._too_big(g, t):
            return self._fft(sigma, rows, t)
        a = self._matrix(sigma, g, t)
        num_in, den_in = self._inputs(g, rows)
        return num_in @ a, den_in @ a + DENS_EPS

    def smece(self, sigma: float, rows: np.ndarray) -> np.ndarray:
        g = grid_size(sigma)
        t = np.linspace(0, 1, eval_size(sigma))
        if rows.size <= 2 or (self._compose(g) and self._too_big(g, t)):
            num, den = self._fft(sigma, rows, t)
            ys = num / den  # relplot's order of operations, for the point estimate
            return (np.abs(ys) * den).sum(axis=1) / den.sum(axis=1)
        # |ys| * den == |num|, and sum_t den(t) only needs the column sums of the map
        if not self._compose(g):
            return self._smece_fft(sigma, g, t, rows)
        a = self._matrix(sigma, g, t)
        den_total = self.dens[rows] @ a.sum(axis=1) + t.size * DENS_EPS
        return np.abs(self.resid[rows] @ a).sum(axis=1) / den_total

    def smece_rows(self, sigmas: np.ndarray) -> np.ndarray:
        out = np.empty(sigmas.size)
        for s in np.unique(sigmas):
            rows = np.flatnonzero(sigmas == s)
            out[rows] = self.smece(float(s), rows)
        return out

    def search(self) -> tuple[np.ndarray, np.ndarray]:
        """relplot's search_param, row by row in lockstep: returns (smECE, bandwidth) per row."""
        r = self.resid.shape[0]
        start = np.ones(r)
        end = np.zeros(r)
        val_start = self.smece_rows(start)
        done = (start < SEARCH_FLOOR) | (start < val_start)
        for _ in range(SEARCH_STEPS):
            live = ~done
            if not live.any():
                break
            mid = (start + end) / 2
            val = np.full(r, np.nan)
            val[live] = self.smece_rows(mid[live])
            ok = live & ((mid < SEARCH_FLOOR) | (mid < val))
            end = np.where(ok, mid, end)
            moved = live & ~ok
            start = np.where(moved, mid, start)
            val_start = np.where(moved, val, val_start)
        return val_start, start


def smooth_ece_k(values, pos, neg, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """smECE and its bandwidth per row of counts; ``values`` need not be sorted or distinct.
    ``cache``: a dict reused across calls with the same ``values`` (smoothing matrices)."""
    pos, neg = as_rows(pos, neg)
    tot = pos + neg
    return _Smoother(values, values[None, :] * tot - pos, tot, cache).search()


def smooth_ece(correct, conf, return_sigma: bool = False):
    """Smooth ECE with the bandwidth chosen as relplot does (s = smECE_s); see the module
    docstring for the definition. ``return_sigma=True`` returns (smECE, s)."""
    y, c = check(correct, conf)
    val, sig = smooth_ece_k(c, y[None, :], 1.0 - y[None, :])
    return (float(val[0]), float(sig[0])) if return_sigma else float(val[0])


def smooth_ece_sigma(correct, conf, sigma: float) -> float:
    """smECE_s at a fixed bandwidth s > 0 (relplot's smECE_sigma)."""
    y, c = check(correct, conf)
    sigma = _sigma(sigma)
    sm = _Smoother(c, (c - y)[None, :], np.ones((1, c.size)))
    return float(sm.smece(float(sigma), np.array([0]))[0])


def smooth_curve_k(values, pos, neg, sigma: float, x: np.ndarray, cache: dict | None = None):
    """Kernel-smoothed accuracy E[y | c = x] at bandwidth sigma (relplot's reliability curve,
    a KernelSmoother on y), one row per row of counts: (R, len(x))."""
    pos, neg = as_rows(pos, neg)
    sm = _Smoother(values, pos, pos + neg, cache)
    num, den = sm.smooth(sigma, np.arange(pos.shape[0]), t=x)
    return num / den


def _sigma(sigma) -> float:
    # the grid has about 20 / sigma points: 0 divides by zero, a tiny sigma exhausts memory
    return real_param("sigma", sigma, SIGMA_MIN, math.inf, hi_open=True)


def smooth_calibration_curve(correct, conf, n_points: int = 101, sigma: float | None = None):
    """(x, E[y | c = x]) on n_points in [0, 1], smoothed at ``sigma`` (default: smECE's bandwidth)."""
    y, c = check(correct, conf)
    n_points = int_param("n_points", n_points, 1)
    if sigma is None:
        _, sigma = smooth_ece(y, c, return_sigma=True)
    else:
        sigma = _sigma(sigma)
    x = np.linspace(0, 1, n_points)
    return x, smooth_curve_k(c, y[None, :], 1.0 - y[None, :], sigma, x)[0]
