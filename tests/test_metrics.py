import csv
import math
import warnings

import numpy as np
import pytest
from scipy import optimize, special, stats

from grmp_iqa_hf.evaluation.metrics import (
    CENTRE_QUANTILES,
    FIT_STATUSES,
    MAX_SLOPE_SCALE,
    METRICS,
    MIN_SLOPE_SCALE,
    compute_metrics,
    fit_logistic,
    logistic4,
    summarize,
    try_fit_logistic,
)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    # a monotone, nonlinear, noisy relation on a different scale
    pred = np.tanh((mos - 3.0) / 1.2) + rng.normal(0, 0.15, n)
    return pred, mos


def _logistic(x, b1, b2, b3, b4):
    # written out again (not metrics.logistic4), so the tests check the formula too
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / abs(b4))) + b2


def _unconstrained_plcc(pred, mos):
    """Pearson correlation after scipy's plain, unbounded `curve_fit` of the logistic: the best
    of a few usual starting points (both directions, three slopes)."""
    best = -1.0
    for hi, lo in ((mos.max(), mos.min()), (mos.min(), mos.max())):
        for b4 in (pred.std(), pred.std() / 4, pred.std() * 4):
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    params, _ = optimize.curve_fit(_logistic, pred, mos, p0=[hi, lo, pred.mean(), b4],
                                                   maxfev=20000)
            except RuntimeError:
                continue
            mapped = _logistic(pred, *params)
            if np.all(np.isfinite(mapped)) and np.ptp(mapped) > 0:
                best = max(best, stats.pearsonr(mapped, mos)[0])
    return best


def _bounded_least_squares_sse(pred, mos, direction):
    """The same bounded problem solved by a second implementation: scipy's `least_squares` (trf) on
    all four parameters, from several starts. Parametrised as (b2, b1 - b2, b3, b4), so the
    direction is a bound on the amplitude."""
    sd = pred.std()
    span = np.ptp(mos)
    amp_bounds = (0.0, np.inf) if direction > 0 else (-np.inf, 0.0)
    lo3, hi3 = np.quantile(pred, CENTRE_QUANTILES)
    lower = [-np.inf, amp_bounds[0], lo3, MIN_SLOPE_SCALE * sd]
    upper = [np.inf, amp_bounds[1], hi3, MAX_SLOPE_SCALE * sd]
    best = np.inf
    for frac in (0.2, 0.5, 0.8):
        for b4 in (MIN_SLOPE_SCALE * sd, 3 * sd, 10 * sd):
            x0 = [mos.mean() - direction * span / 2, direction * span, np.quantile(pred, frac), b4]
            x0[1] = x0[1] if x0[1] != 0 else 1e-3
            res = optimize.least_squares(
                lambda t: t[0] + t[1] / (1.0 + np.exp(-(pred - t[2]) / t[3])) - mos,
                x0, bounds=(lower, upper), method="trf", x_scale="jac", max_nfev=2000)
            best = min(best, float(np.sum(res.fun ** 2)))
    return best


def test_matches_scipy():
    pred, mos = _data()
    res = compute_metrics(pred, mos)
    assert res["n"] == 200
    assert abs(res["srcc"] - stats.spearmanr(pred, mos)[0]) < 1e-9
    assert abs(res["krcc"] - stats.kendalltau(pred, mos)[0]) < 1e-9
    assert abs(res["plcc"] - stats.pearsonr(pred, mos)[0]) < 1e-9
    assert res["plcc_logistic_fit"] == "ok" and "increasing" in res["plcc_logistic_fit_reason"]
    for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"):
        assert isinstance(res[k], float)
    # plcc_logistic is the Pearson correlation of the curve's output, and the curve is the reported one
    mapped = _logistic(pred, *res["plcc_logistic_params"])
    assert res["plcc_logistic"] == pytest.approx(stats.pearsonr(mapped, mos)[0], abs=1e-12)
    assert res["rmse"] == pytest.approx(math.sqrt(np.mean((mapped - mos) ** 2)), rel=1e-12)


def test_random_data_matches_scipy():
    rng = np.random.default_rng(1)
    pred, mos = rng.normal(size=50), rng.normal(size=50)
    res = compute_metrics(pred, mos)
    assert abs(res["srcc"] - stats.spearmanr(pred, mos)[0]) < 1e-9
    assert abs(res["krcc"] - stats.kendalltau(pred, mos)[0]) < 1e-9
    assert abs(res["plcc"] - stats.pearsonr(pred, mos)[0]) < 1e-9
    assert res["plcc_logistic_fit"] in FIT_STATUSES and res["plcc_logistic_fit_reason"]


def test_logistic_plcc_at_least_independent_fit():
    pred, mos = _data(seed=3)
    res = compute_metrics(pred, mos)
    assert res["plcc_logistic"] >= _unconstrained_plcc(pred, mos) - 0.01
    # nonlinear relation: the fit helps (b4 <= 20 std keeps it within 1e-5 of its straight-line limit)
    assert res["plcc_logistic"] >= res["plcc"] - 1e-5


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [12, 60, 300])
def test_fit_is_the_least_squares_optimum_of_the_bounded_problem(seed, n):
    """A second implementation (scipy least_squares, bounded, several starts) finds no lower error."""
    rng = np.random.default_rng([seed, n])
    pred = rng.normal(size=n) * rng.uniform(0.1, 50)
    kind = seed % 3
    if kind == 0:
        mos = rng.uniform(1, 5, n)  # unrelated
    elif kind == 1:
        mos = 50 + 30 * np.tanh(pred / pred.std() * rng.uniform(0.5, 3)) + rng.normal(0, 8, n)
    else:
        mos = -np.exp(pred / pred.std()) + rng.normal(0, 0.5, n)  # decreasing and convex
    fit = try_fit_logistic(pred, mos)
    if fit.status != "ok":
        assert fit.status == "degenerate" and "flat" in fit.reason
        # then even the second implementation finds nothing better than the mean
        assert _bounded_least_squares_sse(pred, mos, fit.direction) >= np.sum((mos - mos.mean()) ** 2) * (1 - 1e-6)
        return
    b1, b2, b3, b4 = fit.params
    sd = pred.std()
    assert MIN_SLOPE_SCALE * sd * (1 - 1e-9) <= b4 <= MAX_SLOPE_SCALE * sd * (1 + 1e-9)
    lo3, hi3 = np.quantile(pred, CENTRE_QUANTILES)
    assert lo3 - 1e-9 * sd <= b3 <= hi3 + 1e-9 * sd
    assert np.sign(b1 - b2) == fit.direction == np.sign(stats.spearmanr(pred, mos)[0])
    ours = float(np.sum((_logistic(pred, *fit.params) - mos) ** 2))
    assert ours <= _bounded_least_squares_sse(pred, mos, fit.direction) * (1 + 1e-6)


def test_unrelated_predictions_do_not_inflate_logistic_plcc():
    """Acceptance: predictions drawn independently of MOS, 1,000 times at each n. The median
    |logistic PLCC| stays within 0.05 of the median |PLCC|, and its sign is SRCC's."""
    rng = np.random.default_rng(2024)
    for n in (20, 125, 500):
        res = [compute_metrics(rng.normal(size=n), rng.uniform(1, 5, n)) for _ in range(1000)]
        plcc = np.array([r["plcc"] for r in res])
        srcc = np.array([r["srcc"] for r in res])
        logistic = np.array([r["plcc_logistic"] for r in res])
        status = np.array([r["plcc_logistic_fit"] for r in res])
        assert set(status) <= {"ok", "degenerate"}
        assert np.array_equal(np.isfinite(logistic), status == "ok")
        # degenerate fits (no number) are left out, which only raises the median: a strict check
        excess = np.median(np.abs(logistic[status == "ok"])) - np.median(np.abs(plcc))
        assert excess <= 0.05, (n, excess)
        ok = status == "ok"
        nonzero = ok & (srcc != 0)
        assert np.all(np.sign(logistic[nonzero]) == np.sign(srcc[nonzero])), n
        strong = np.abs(srcc) > 0.1
        assert np.all(np.sign(logistic[strong & ok]) == np.sign(srcc[strong & ok])), n
        assert np.mean(~ok[strong]) <= 0.02, n  # rarely flat when SRCC has a clear sign
        # flat only where the data contradict SRCC's direction: PLCC of the other sign (or about 0)
        assert np.all((plcc[~ok] * srcc[~ok] <= 0) | (np.abs(plcc[~ok]) < 0.01)), n


def _strong_cases(mos, rng):
    scale = np.ptp(mos)
    for noise in (0.05, 0.15, 0.3):
        pred = mos + rng.normal(0, noise * scale, mos.size)
        yield f"mos+noise({noise})", pred, mos
        yield f"-(mos+noise({noise}))", -pred, mos


def test_strong_relation_keeps_the_logistic_gain_synthetic():
    """Acceptance (always runs): with a strong relation the bounded fit loses at most 0.01 against
    scipy's unbounded curve_fit."""
    rng = np.random.default_rng(7)
    mos = 100 * rng.beta(4, 2.5, 500)  # bounded and skewed, like real MOS
    cases = list(_strong_cases(mos, rng))
    x = rng.uniform(0, 1, 300)  # a true logistic with b4 = 2 std: inside the bounds
    cases.append(("logistic", x, 3 + 2 * special.expit((x - 0.5) / (2 * x.std())) + rng.normal(0, 0.05, 300)))
    for name, pred, target in cases:
        res = compute_metrics(pred, target)
        assert res["plcc_logistic_fit"] == "ok", name
        assert np.sign(res["plcc_logistic"]) == np.sign(res["srcc"]), name
        assert abs(res["plcc_logistic"]) >= _unconstrained_plcc(pred, target) - 0.01, name


def test_strong_relation_keeps_the_logistic_gain_on_clive(clive_dir):
    """Acceptance on real MOS (LIVE-in-the-Wild, 627 images) plus noise."""
    with open(clive_dir / "metadata.csv", newline="") as f:
        mos = np.array([float(row["mos"]) for row in csv.DictReader(f)])
    assert mos.size > 100
    rng = np.random.default_rng(8)
    for name, pred, target in _strong_cases(mos, rng):
        res = compute_metrics(pred, target)
        assert res["plcc_logistic_fit"] == "ok", name
        assert abs(res["plcc_logistic"]) >= _unconstrained_plcc(pred, target) - 0.01, name


def test_a_step_is_not_fitted():
    """The unbounded fit turns this into a vertical step and a flipped, inflated PLCC; ours keeps
    the slope bound and SRCC's sign."""
    rng = np.random.default_rng(11)
    pred = rng.normal(size=20)
    mos = rng.uniform(0, 100, 20)
    mos[pred > np.quantile(pred, 0.8)] += 60  # the top predictions happen to have high MOS...
    pred[np.argmin(mos)] = pred.max() + 5  # ...but one outlier points the other way
    res = compute_metrics(pred, mos)
    assert res["plcc_logistic_fit"] == "ok"
    assert res["plcc_logistic_params"][3] >= MIN_SLOPE_SCALE * pred.std() * (1 - 1e-9)
    assert np.sign(res["plcc_logistic"]) == np.sign(res["srcc"])


def test_fit_logistic_params_and_scale_invariance():
    pred, mos = _data(seed=4)
    params, mapped = fit_logistic(pred, mos)
    assert params.shape == (4,) and params[3] > 0
    np.testing.assert_allclose(logistic4(pred, *params), mapped)
    np.testing.assert_allclose(_logistic(pred, *params), mapped, rtol=1e-12)
    # affine rescaling of predictions must not change the logistic PLCC
    a = compute_metrics(pred, mos)["plcc_logistic"]
    b = compute_metrics(pred * 1000.0 + 7.0, mos)["plcc_logistic"]
    assert abs(a - b) < 1e-9


def test_decreasing_relation():
    pred, mos = _data(seed=5)
    res = compute_metrics(-pred, mos)
    assert res["srcc"] < 0 and res["plcc"] < 0
    assert res["plcc_logistic_fit"] == "ok" and "decreasing" in res["plcc_logistic_fit_reason"]
    # the same curve mirrored: the logistic PLCC keeps the predictions' orientation, like PLCC
    assert res["plcc_logistic"] == pytest.approx(-compute_metrics(pred, mos)["plcc_logistic"], abs=1e-9)
    assert res["plcc_logistic"] < -0.8
    b1, b2, _, _ = res["plcc_logistic_params"]
    assert b1 < b2  # a decreasing curve


def test_logistic4_no_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = logistic4(np.array([-1e6, 0.0, 1e6]), 5.0, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(y, [1.0, 3.0, 5.0])


@pytest.mark.parametrize(
    "pred,mos,reason",
    [
        ([1.0, 2.0], [3.0, 4.0], "2 item(s)"),
        ([1.0], [2.0], "1 item(s)"),
        ([], [], "0 item(s)"),
        ([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], "predictions are all equal"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 3.0, 3.0, 3.0, 3.0], "MOS are all equal"),
    ],
)
def test_degenerate_gives_nan_without_warnings(pred, mos, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compute_metrics(pred, mos)
    for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"):
        assert math.isnan(res[k]), k
    assert res["n"] == len(pred)
    assert res["plcc_logistic_fit"] == "skipped" and reason in res["plcc_logistic_fit_reason"]
    assert res["plcc_logistic_params"] is None


def test_three_items_rmse_is_nan_with_a_reason():
    """Acceptance: 3 images, scores in [0, 1] and MOS in 0-100. The fit is skipped, so there is no RMSE
    in MOS units to give: NaN (not the 54.5 of raw scores against MOS), and the reason says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compute_metrics([0.2, 0.5, 0.9], [20.0, 80.0, 60.0])
    assert math.isfinite(res["srcc"]) and math.isfinite(res["plcc"])
    assert math.isnan(res["rmse"]) and math.isnan(res["plcc_logistic"])
    assert res["plcc_logistic_fit"] == "skipped"
    assert res["plcc_logistic_fit_reason"] == "3 item(s): a 4-parameter logistic needs at least 5"


def test_rmse_is_in_mos_units_after_the_mapping():
    """Acceptance: 100 images, scores in [0, 1], MOS in 0-100: RMSE is that of the mapped scores in MOS
    units, checked against an independent computation and the least-squares identity
    RMSE^2 = var(MOS) * (1 - r^2)."""
    rng = np.random.default_rng(12)
    mos = rng.uniform(0, 100, 100)
    pred = special.expit((mos - 50) / 20 + rng.normal(0, 0.6, 100))  # in [0, 1]
    res = compute_metrics(pred, mos)
    assert res["plcc_logistic_fit"] == "ok"
    mapped = _logistic(pred, *res["plcc_logistic_params"])
    assert res["rmse"] == pytest.approx(math.sqrt(np.mean((mapped - mos) ** 2)), rel=1e-12)
    r = stats.pearsonr(mapped, mos)[0]
    assert res["rmse"] == pytest.approx(mos.std() * math.sqrt(1 - r**2), rel=1e-9)
    assert 5 < res["rmse"] < mos.std()  # MOS units: far above the [0, 1] scale, below the spread
    # rescaling MOS rescales RMSE; rescaling the scores does not change it
    assert compute_metrics(pred, mos / 10)["rmse"] == pytest.approx(res["rmse"] / 10, rel=1e-9)
    assert compute_metrics(pred * 7 + 3, mos)["rmse"] == pytest.approx(res["rmse"], rel=1e-9)


def test_flat_fit_is_degenerate():
    # most pairs rise (SRCC > 0), but one outlier makes every rising curve fit worse than the mean
    pred = np.arange(10.0)
    mos = np.arange(10.0)
    mos[-1] = -1000.0
    res = compute_metrics(pred, mos)
    assert res["srcc"] > 0 and res["plcc"] < 0
    assert res["plcc_logistic_fit"] == "degenerate"
    assert "flat" in res["plcc_logistic_fit_reason"] and "increasing" in res["plcc_logistic_fit_reason"]
    assert math.isnan(res["plcc_logistic"]) and math.isnan(res["rmse"])
    assert res["plcc_logistic_params"] is None
    with pytest.raises(RuntimeError, match="degenerate.*flat"):
        fit_logistic(pred, mos)


def test_fit_logistic_raises_on_degenerate():
    with pytest.raises(RuntimeError, match="skipped: 3 item"):
        fit_logistic([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match="predictions are all equal"):
        fit_logistic([1.0] * 10, np.arange(10.0))
    assert try_fit_logistic([1.0] * 10, np.arange(10.0)).status == "skipped"


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="length mismatch"):
        compute_metrics([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"pred has 1 non-finite value.*\[1\]"):
        compute_metrics([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"mos has 2 non-finite.*\[0, 3\]"):
        compute_metrics([1.0, 2.0, 3.0, 4.0], [np.inf, 2.0, 3.0, -np.inf])
    with pytest.raises(ValueError, match="1-D"):
        compute_metrics(np.ones((3, 2)), np.ones((3, 2)))


def test_column_vectors_accepted():
    pred, mos = _data(n=30)
    a = compute_metrics(pred[:, None], mos)
    b = compute_metrics(pred, mos)
    assert a["srcc"] == b["srcc"]


def test_summarize_ignores_nan():
    per_split = [
        {"srcc": 0.9, "plcc": 0.8, "rmse": 0.5, "n": 10, "plcc_logistic_fit": "ok", "flag": True},
        {"srcc": 0.7, "plcc": float("nan"), "rmse": 0.7, "n": 10, "plcc_logistic_fit": "degenerate", "flag": False},
        {"srcc": 0.8, "plcc": 0.6, "rmse": float("nan"), "n": 12, "plcc_logistic_fit": "ok", "flag": True},
    ]
    s = summarize(per_split)
    assert set(s) == {"median", "mean", "std"}
    assert "plcc_logistic_fit" not in s["median"] and "flag" not in s["median"]
    assert s["median"]["srcc"] == pytest.approx(0.8)
    assert s["mean"]["srcc"] == pytest.approx(0.8)
    assert s["std"]["srcc"] == pytest.approx(np.std([0.9, 0.7, 0.8]))
    assert s["median"]["plcc"] == pytest.approx(0.7)
    assert s["mean"]["rmse"] == pytest.approx(0.6)
    assert s["median"]["n"] == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2 = summarize([{"srcc": float("nan")}, {"srcc": float("nan")}])
    assert math.isnan(s2["median"]["srcc"])
    with pytest.raises(ValueError):
        summarize([])


def test_metrics_table():
    assert METRICS["srcc"].higher_is_better is True
    assert METRICS["plcc"][1] is True
    assert METRICS["rmse"] == ("RMSE", False)
    assert set(METRICS) <= set(compute_metrics([1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 4.0, 3.0]))


def test_plot_scatter_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from grmp_iqa_hf.evaluation.plots import plot_scatter

    pred, mos = _data(n=100)
    out = tmp_path / "sub" / "scatter.png"
    ret = plot_scatter(pred, mos, out, title="KonIQ test")
    assert ret == out
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    # degenerate input still plots (no curve)
    out2 = tmp_path / "tiny.png"
    plot_scatter([1.0, 2.0], [3.0, 4.0], str(out2), metrics=compute_metrics([1.0, 2.0], [3.0, 4.0]))
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _texts(fig):
    ax = fig.axes[0]
    return ax.get_title() + " " + " ".join(t.get_text() for t in ax.texts)


def test_plot_draws_the_curve_that_was_used():
    pytest.importorskip("matplotlib")
    from grmp_iqa_hf.evaluation.plots import scatter_figure

    pred, mos = _data(n=100, seed=9)
    metrics = compute_metrics(pred, mos)
    for given in (metrics, None):  # passed in, or computed by the plot
        fig = scatter_figure(pred, mos, metrics=given)
        (line,) = fig.axes[0].get_lines()
        xs, ys = line.get_data()
        assert xs.min() == pred.min() and xs.max() == pred.max()
        np.testing.assert_allclose(ys, _logistic(xs, *metrics["plcc_logistic_params"]), rtol=1e-12)
        assert f"PLCC(log)={metrics['plcc_logistic']:.4f}" in _texts(fig)
        assert f"RMSE={metrics['rmse']:.4f}" in _texts(fig)


@pytest.mark.parametrize("status", ["skipped", "degenerate"])
def test_plot_without_a_usable_fit_draws_no_curve_and_says_why(status):
    pytest.importorskip("matplotlib")
    from grmp_iqa_hf.evaluation.plots import scatter_figure

    if status == "skipped":
        pred, mos = np.array([0.2, 0.5, 0.9]), np.array([20.0, 80.0, 60.0])
    else:
        pred, mos = np.arange(10.0), np.arange(10.0)
        mos[-1] = -1000.0
    metrics = compute_metrics(pred, mos)
    assert metrics["plcc_logistic_fit"] == status
    fig = scatter_figure(pred, mos, metrics=metrics)
    assert fig.axes[0].get_lines() == []
    text = _texts(fig)
    assert f"no logistic curve: fit {status}" in text and metrics["plcc_logistic_fit_reason"] in text
    assert "PLCC(log)" not in text and "RMSE" not in text
