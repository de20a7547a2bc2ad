import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from grmp_iqa_hf.evaluation.metrics import (
    METRICS,
    compute_metrics,
    fit_logistic,
    logistic4,
    summarize,
)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    # a monotone, nonlinear, noisy relation on a different scale
    pred = np.tanh((mos - 3.0) / 1.2) + rng.normal(0, 0.15, n)
    return pred, mos


def test_matches_scipy():
    pred, mos = _data()
    res = compute_metrics(pred, mos)
    assert res["n"] == 200
    assert abs(res["srcc"] - stats.spearmanr(pred, mos)[0]) < 1e-9
    assert abs(res["krcc"] - stats.kendalltau(pred, mos)[0]) < 1e-9
    assert abs(res["plcc"] - stats.pearsonr(pred, mos)[0]) < 1e-9
    assert res["logistic_fit_ok"] is True
    for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"):
        assert isinstance(res[k], float)


def test_random_data_matches_scipy():
    rng = np.random.default_rng(1)
    pred, mos = rng.normal(size=50), rng.normal(size=50)
    res = compute_metrics(pred, mos)
    assert abs(res["srcc"] - stats.spearmanr(pred, mos)[0]) < 1e-9
    assert abs(res["krcc"] - stats.kendalltau(pred, mos)[0]) < 1e-9
    assert abs(res["plcc"] - stats.pearsonr(pred, mos)[0]) < 1e-9
    assert math.isfinite(res["plcc_logistic"]) and math.isfinite(res["rmse"])


def test_logistic_plcc_at_least_independent_fit():
    pred, mos = _data(seed=3)

    def f(x, a, b, c, d):
        return (a - b) / (1 + np.exp(-(x - c) / abs(d))) + b

    params, _ = optimize.curve_fit(
        f, pred, mos, p0=[mos.max(), mos.min(), pred.mean(), pred.std()], maxfev=50000
    )
    ref_plcc = stats.pearsonr(f(pred, *params), mos)[0]
    res = compute_metrics(pred, mos)
    assert res["plcc_logistic"] >= ref_plcc - 0.01
    assert res["plcc_logistic"] >= res["plcc"] - 1e-6  # nonlinear relation: fit helps
    mapped_rmse = math.sqrt(np.mean((f(pred, *params) - mos) ** 2))
    assert res["rmse"] <= mapped_rmse + 0.01


def test_fit_logistic_params_and_scale_invariance():
    pred, mos = _data(seed=4)
    params, mapped = fit_logistic(pred, mos)
    assert params.shape == (4,) and params[3] > 0
    np.testing.assert_allclose(logistic4(pred, *params), mapped)
    # affine rescaling of predictions must not change the logistic PLCC
    a = compute_metrics(pred, mos)["plcc_logistic"]
    b = compute_metrics(pred * 1000.0 + 7.0, mos)["plcc_logistic"]
    assert abs(a - b) < 1e-4


def test_decreasing_relation():
    pred, mos = _data(seed=5)
    res = compute_metrics(-pred, mos)
    assert res["srcc"] < 0 and res["plcc"] < 0
    assert res["logistic_fit_ok"] and res["plcc_logistic"] > 0.8


def test_logistic4_no_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = logistic4(np.array([-1e6, 0.0, 1e6]), 5.0, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(y, [1.0, 3.0, 5.0])


@pytest.mark.parametrize(
    "pred,mos",
    [
        ([1.0, 2.0], [3.0, 4.0]),  # 2 items
        ([1.0], [2.0]),
        ([], []),
        ([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]),  # constant preds
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 3.0, 3.0, 3.0, 3.0]),  # constant MOS
    ],
)
def test_degenerate_gives_nan_without_warnings(pred, mos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compute_metrics(pred, mos)
    for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"):
        assert math.isnan(res[k]), k
    assert res["n"] == len(pred)
    assert res["logistic_fit_ok"] is False


def test_three_items_fall_back_to_raw():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compute_metrics([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])
    assert res["logistic_fit_ok"] is False
    assert res["plcc_logistic"] == res["plcc"]
    assert math.isfinite(res["rmse"])


def test_fit_logistic_raises_on_degenerate():
    with pytest.raises(RuntimeError):
        fit_logistic([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError):
        fit_logistic([1.0] * 10, np.arange(10.0))


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
        {"srcc": 0.9, "plcc": 0.8, "rmse": 0.5, "n": 10, "logistic_fit_ok": True},
        {"srcc": 0.7, "plcc": float("nan"), "rmse": 0.7, "n": 10, "logistic_fit_ok": False},
        {"srcc": 0.8, "plcc": 0.6, "rmse": float("nan"), "n": 12, "logistic_fit_ok": True},
    ]
    s = summarize(per_split)
    assert set(s) == {"median", "mean", "std"}
    assert "logistic_fit_ok" not in s["median"]
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
