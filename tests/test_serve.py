"""`grmp-iqa serve` (grmp_iqa_hf.serve): a real uvicorn server on 127.0.0.1 (a background thread of the test
process; one subprocess for SIGTERM), loopback only. Skipped where the `[serve]` extra is not installed."""

import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grmp_iqa_hf.serve import missing_dependencies

if missing_dependencies():
    pytest.skip(f"the [serve] extra is not installed (missing {', '.join(missing_dependencies())})",
                allow_module_level=True)

from conftest import REPO_ROOT, save_tiny_model  # noqa: E402
from grmp_iqa_hf import GRMPIQAModel  # noqa: E402
from grmp_iqa_hf.serve import create_app  # noqa: E402
from grmp_iqa_hf.serve.client import ScoreClient, encode_multipart, running_server  # noqa: E402


def _benchmark():
    spec = importlib.util.spec_from_file_location("serve_benchmark", REPO_ROOT / "benchmarks" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(model, its saved folder, image files, `model.predict` of each file)."""
    folder = tmp_path_factory.mktemp("serve")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared machine: extra threads only add contention
    model, path = save_tiny_model(GRMPIQAModel, folder / "model")
    files = BENCH.write_images(folder, count=6)
    expected = model.predict([str(f) for f in files], progress=False)
    yield model.eval(), path, files, expected
    torch.set_num_threads(threads)


def _slowed(path, seconds: float):
    """A fresh copy of the saved model whose forward pass sleeps `seconds` first (a slow model)."""
    model = GRMPIQAModel.from_pretrained(path).eval()
    forward = model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    return model


def _truncated_jpeg(path) -> bytes:
    data = Path(path).read_bytes()
    return data[: len(data) // 2]


def test_under_load_every_request_is_answered_with_predicts_score(served):
    model, _, files, expected = served
    app = create_app(model, max_batch_size=32, max_wait_ms=10)
    with running_server(app) as url:
        client = ScoreClient(url)
        health = client.request("GET", "/healthz")
        assert health.status == 200 and health.json()["status"] == "ok"
        info = client.request("GET", "/v1/model").json()
        assert info["method"] == info["model_type"] == "grmp_iqa" and info["dtype"] == "float32"
        assert info["preprocessing"] == model.image_processor.to_dict() and info["max_batch_size"] == 32
        page = client.request("GET", "/")
        assert page.status == 200 and b'id="file-input"' in page.body
        assert b"http://" not in page.body and b"https://" not in page.body  # self-contained: no CDN

        run = BENCH.load(url, files, clients=16, requests=200)
        stats = app.state.service.batcher.stats()
    assert sorted(run["answers"]) == list(range(200))
    for index, (status, body) in run["answers"].items():
        assert status == 200, (index, body)
        (result,) = body["results"]
        assert result["name"] == files[index % len(files)].name
        assert abs(result["score"] - float(expected[index % len(files)])) < 1e-5, (index, result)
    assert stats["largest_batch"] > 1, stats  # concurrent requests were scored together
    assert stats["pending"] == 0


def test_broken_images_get_their_own_errors_and_limits_hold(served, tmp_path):
    from PIL import Image

    model, _, files, expected = served
    bomb = io.BytesIO()
    Image.new("RGB", (300, 300), (90, 120, 30)).save(bomb, "PNG")  # 90,000 pixels > --max-pixels, small file
    app = create_app(model, max_upload_mb=0.25, max_pixels=50_000)
    with running_server(app) as url:
        client = ScoreClient(url)
        uploads = [files[0], ("cut.jpg", _truncated_jpeg(files[1])), files[2], ("empty.jpg", b""),
                   ("notes.txt", b"not an image at all"), ("huge.png", bomb.getvalue()), files[3]]
        results = client.score(uploads)
        assert [r["name"] for r in results] == [files[0].name, "cut.jpg", files[2].name, "empty.jpg", "notes.txt",
                                                "huge.png", files[3].name]
        for position, file_index in ((0, 0), (2, 2), (6, 3)):
            assert abs(results[position]["score"] - float(expected[file_index])) < 1e-5
        assert "truncated" in results[1]["error"] and "score" not in results[1]
        assert results[3]["error"] == "empty file"
        assert results[4]["error"].startswith("not an image")
        assert results[5]["error"].startswith("decompression bomb: 90000 pixels exceeds the limit of 50000")

        # JSON with base64 (and a data: URL), a bad base64 string among them
        import base64

        good = base64.b64encode(files[4].read_bytes()).decode()
        body = json.dumps({"images": [good, "%%%not-base64", "data:image/jpeg;base64," + good]})
        response = client.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        assert response.status == 200
        first, bad, third = response.json()["results"]
        assert abs(first["score"] - float(expected[4])) < 1e-5 and third["score"] == first["score"]
        assert bad["error"].startswith("not valid base64")

        # an oversized upload: refused from Content-Length, and while reading a chunked body (no length)
        big, content_type = encode_multipart([("big.png", os.urandom(400_000))])
        response = client.request("POST", "/v1/score", big, {"Content-Type": content_type})
        assert response.status == 413 and "max-upload-mb" in response.json()["error"]
        chunked = ScoreClient(url)
        chunked._conn = __import__("http.client").client.HTTPConnection(chunked.host, chunked.port, timeout=30)
        chunked._conn.request("POST", "/v1/score", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                              headers={"Content-Type": content_type}, encode_chunked=True)
        assert chunked._conn.getresponse().status == 413
        chunked.close()

        for bad_request, status in ((("text/plain", b"hello"), 415), (("application/json", b"{"), 400),
                                    (("application/json", b'{"images": []}'), 400)):
            response = client.request("POST", "/v1/score", bad_request[1], {"Content-Type": bad_request[0]})
            assert response.status == status, response.body

        # still serving
        assert abs(ScoreClient(url).score([files[5]])[0]["score"] - float(expected[5])) < 1e-5
        assert client.request("GET", "/healthz").status == 200


def test_full_queue_answers_503_with_retry_after_then_serves_again(served):
    _, path, files, expected = served
    app = create_app(_slowed(path, 0.4), max_batch_size=1, max_wait_ms=0, max_queue=2)
    with running_server(app) as url:
        batcher = app.state.service.batcher
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(results=ScoreClient(url).score(files[:2])))
        thread.start()
        deadline = time.monotonic() + 10
        while batcher.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = ScoreClient(url).post_files([files[2]])
        assert refused.status == 503 and refused.headers["retry-after"] == "1", refused.body
        assert "queue is full" in refused.json()["error"]
        thread.join(30)
        assert [abs(r["score"] - float(e)) < 1e-5 for r, e in zip(first["results"], expected[:2])] == [True, True]
        assert abs(ScoreClient(url).score([files[2]])[0]["score"] - float(expected[2])) < 1e-5


def test_request_timeout_answers_504_and_the_server_recovers(served):
    _, path, files, _ = served
    app = create_app(_slowed(path, 0.6), max_batch_size=4, max_wait_ms=0, timeout_s=0.2)
    with running_server(app) as url:
        response = ScoreClient(url).post_files([files[0]])
        assert response.status == 504 and "timeout-s" in response.json()["error"]
        deadline = time.monotonic() + 10
        while app.state.service.batcher.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.service.batcher.pending == 0  # the abandoned image's room was given back
        assert ScoreClient(url).request("GET", "/healthz").status == 200


def test_healthz_is_503_until_loaded_and_shutdown_finishes_in_flight_requests(served):
    model, path, files, expected = served
    release = threading.Event()

    def load():
        release.wait(30)
        return _slowed(path, 0.5)

    app = create_app(load, model_id="test-model")
    with running_server(app, wait_ready=False) as url:
        client = ScoreClient(url)
        deadline = time.monotonic() + 10
        while True:  # the socket answers before the model is loaded
            try:
                response = client.request("GET", "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status == 503 and "loading" in response.json()["error"]
        assert client.request("POST", "/v1/score", b"{}", {"Content-Type": "application/json"}).status == 503
        release.set()
        while client.request("GET", "/healthz").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.request("GET", "/v1/model").json()["id"] == "test-model"
        in_flight: dict = {}
        thread = threading.Thread(target=lambda: in_flight.update(results=ScoreClient(url).score([files[0]])))
        thread.start()
        time.sleep(0.2)  # the request is being scored when the server is told to stop
    thread.join(10)
    assert abs(in_flight["results"][0]["score"] - float(expected[0])) < 1e-5
    service = app.state.service
    assert not service.ready and not service.batcher._thread.is_alive()


def test_dtype_and_crops_reach_the_model(served):
    _, path, files, expected = served
    app = create_app(GRMPIQAModel.from_pretrained(path), dtype="bfloat16")
    with running_server(app) as url:
        client = ScoreClient(url)
        assert client.request("GET", "/v1/model").json()["dtype"] == "bfloat16"
        scores = [r["score"] for r in client.score(files)]
    assert np.abs(np.array(scores) - expected).max() < 0.05
    import inspect

    if "crops" not in inspect.signature(GRMPIQAModel.predict).parameters:
        pytest.skip("model.predict has no crops= yet (multi-crop scoring lands with the lead's predict change)")
    model = GRMPIQAModel.from_pretrained(path).eval()
    want = model.predict([str(f) for f in files[:3]], crops=3, progress=False)
    with running_server(create_app(model, crops=3)) as url:
        got = [r["score"] for r in ScoreClient(url).score(files[:3])]
    assert np.abs(np.array(got) - want).max() < 1e-5


def test_dynamic_batching_pays(served):
    model, _, files, _ = served
    result = BENCH.measure(model, files, clients=16, requests=96, sequential=False)
    assert result["batched"]["ok"] == result["one_at_a_time"]["ok"] == 96
    assert result["ratio"] >= 1.5, json.dumps(result)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_grmp_iqa_serve_serves_and_stops_cleanly_on_sigterm(served, tmp_path):
    """The command itself (`grmp-iqa serve`, i.e. `run_server` through the CLI) in its own process."""
    _, path, files, expected = served
    port = _free_port()
    command = [sys.executable, "-m", "grmp_iqa_hf.cli", "serve", "--model", str(path), "--port", str(port),
               "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = ScoreClient(f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if client.request("GET", "/healthz").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        info = client.request("GET", "/v1/model").json()
        assert info["id"] == str(path) and info["method"] == "grmp_iqa"
        assert abs(client.score([files[0]])[0]["score"] - float(expected[0])) < 1e-5
        client.close()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is SIGTERM's
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output and "Finished server process" in output, output


def _browser():
    """A headless Chromium driven by selenium, or a reason why there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install selenium)"
    binary = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(name)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        return None, "no Chromium and chromedriver found (apt-get install -y chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1100,900"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options), None
    except Exception as err:  # noqa: BLE001 - a browser that cannot start is a missing browser here
        return None, f"Chromium did not start: {err}"


def test_the_page_scores_a_photo_in_a_real_browser(served, tmp_path, clive_dir_or_none):
    model, _, files, _ = served
    photos = [str(f) for f in files[:3]]
    if clive_dir_or_none is not None:
        photos = [str(p) for p in sorted((clive_dir_or_none / "images").glob("*.JPG"))[:3]] or photos
    want = model.predict(photos, progress=False)
    driver, reason = _browser()
    if driver is None:
        pytest.skip(reason)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        with running_server(create_app(model)) as url:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: "grmp_iqa" in d.find_element(By.ID, "model").text)
            driver.find_element(By.ID, "file-input").send_keys("\n".join(photos))
            WebDriverWait(driver, 60).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-state=done]")) == len(photos))
            rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
            got = {row.find_elements(By.TAG_NAME, "td")[1].text:
                   float(row.find_element(By.CSS_SELECTOR, ".score").get_attribute("data-score")) for row in rows}
            assert driver.find_element(By.ID, "stats").text.startswith(f"{len(photos)} scores")
            screenshot = tmp_path / "serve_page.png"
            driver.save_screenshot(str(screenshot))
            if os.environ.get("GRMP_IQA_SCREENSHOT"):
                shutil.copy(screenshot, os.environ["GRMP_IQA_SCREENSHOT"])
    finally:
        driver.quit()
    for photo, score in zip(photos, want):
        assert abs(got[Path(photo).name] - float(score)) < 1e-5


@pytest.fixture
def clive_dir_or_none():
    from conftest import CLIVE_DIR

    return CLIVE_DIR if (CLIVE_DIR / "metadata.csv").is_file() else None
