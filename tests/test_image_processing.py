"""Tests for modeling/image_processing_iqa.py (image loading + IQAImageProcessor)."""

import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from grmp_iqa_hf.modeling.image_processing_iqa import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageLoadError,
    IQAImageProcessor,
    load_image,
)

WHITE = (255, 255, 255)


def px(img, xy):
    return tuple(int(v) for v in img.getpixel(xy))


def assert_rgb(img, size):
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size


def close(a, b, tol=1):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def over_white(rgb, alpha):
    """Independent expectation for alpha compositing over white."""
    a = alpha / 255.0
    return tuple(round(c * a + 255 * (1 - a)) for c in rgb)


def gradient_rgb(width, height, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    arr = (arr + rng.integers(0, 20, arr.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


# ------------------------------------------------------------------------------------------
# PIL modes
# ------------------------------------------------------------------------------------------


def test_mode_L():
    img = Image.new("L", (5, 4), 100)
    out = load_image(img)
    assert_rgb(out, (5, 4))
    assert px(out, (2, 2)) == (100, 100, 100)


def test_mode_1():
    img = Image.new("1", (4, 3), 0)
    img.putpixel((1, 1), 1)
    out = load_image(img)
    assert_rgb(out, (4, 3))
    assert px(out, (1, 1)) == WHITE
    assert px(out, (0, 0)) == (0, 0, 0)


def test_mode_LA_alpha_over_white():
    img = Image.new("LA", (3, 1))
    img.putpixel((0, 0), (100, 0))
    img.putpixel((1, 0), (100, 255))
    img.putpixel((2, 0), (0, 128))
    out = load_image(img)
    assert_rgb(out, (3, 1))
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (100, 100, 100)
    assert close(px(out, (2, 0)), over_white((0, 0, 0), 128))


def test_mode_RGBA_partial_alpha():
    img = Image.new("RGBA", (4, 2), (10, 20, 30, 255))
    img.putpixel((1, 0), (10, 20, 30, 0))
    img.putpixel((2, 0), (200, 0, 0, 128))
    img.putpixel((3, 0), (0, 100, 250, 64))
    out = load_image(img)
    assert_rgb(out, (4, 2))
    assert px(out, (0, 0)) == (10, 20, 30)
    assert px(out, (1, 0)) == WHITE
    assert close(px(out, (2, 0)), over_white((200, 0, 0), 128))
    assert close(px(out, (3, 0)), over_white((0, 100, 250), 64))


def test_mode_P_with_and_without_transparency():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    plain = load_image(img)
    assert_rgb(plain, (2, 1))
    assert px(plain, (0, 0)) == (255, 0, 0)
    assert px(plain, (1, 0)) == (0, 0, 255)

    img.info["transparency"] = 1  # palette index 1 is transparent
    out = load_image(img)
    assert px(out, (0, 0)) == (255, 0, 0)
    assert px(out, (1, 0)) == WHITE


def test_mode_CMYK():
    img = Image.new("CMYK", (4, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # no ink -> white
    img.putpixel((1, 0), (0, 0, 0, 255))  # full black ink
    img.putpixel((2, 0), (255, 0, 0, 0))  # cyan
    img.putpixel((3, 0), (0, 255, 0, 0))  # magenta
    out = load_image(img)
    assert_rgb(out, (4, 1))
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (0, 0, 0)
    assert px(out, (2, 0)) == (0, 255, 255)
    assert px(out, (3, 0)) == (255, 0, 255)


def test_mode_YCbCr():
    values = [(128, 128, 128), (255, 128, 128), (81, 90, 240)]  # grey, white, ~red
    img = Image.new("YCbCr", (3, 1))
    for i, v in enumerate(values):
        img.putpixel((i, 0), v)
    out = load_image(img)
    assert_rgb(out, (3, 1))
    for i, (y, cb, cr) in enumerate(values):  # JPEG (full range) YCbCr -> RGB
        expected = (
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        )
        expected = tuple(int(np.clip(round(v), 0, 255)) for v in expected)
        assert close(px(out, (i, 0)), expected, tol=2)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_mode_16bit_scaled_not_clipped(mode):
    values = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes())
    assert img.mode == mode
    out = load_image(img)
    assert_rgb(out, (4, 1))
    assert [px(out, (i, 0))[0] for i in range(4)] == [0, 100, 128, 255]
    assert px(out, (3, 0)) == WHITE


def test_mode_I_treated_as_16bit_and_clipped():
    values = np.array([[-5, 0, 32768, 65535, 100000]], dtype=np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    out = load_image(img)
    assert [px(out, (i, 0))[0] for i in range(5)] == [0, 0, 128, 255, 255]


def test_mode_F_uses_pillow_0_255_scale():
    values = np.array([[-5.0, 0.0, 127.6, 255.0, 300.0]], dtype=np.float32)
    img = Image.fromarray(values)
    assert img.mode == "F"
    out = load_image(img)
    assert_rgb(out, (5, 1))
    assert [px(out, (i, 0))[0] for i in range(5)] == [0, 0, 128, 255, 255]


def test_mode_La_premultiplied():
    img = Image.frombytes("La", (2, 1), bytes([50, 100, 0, 0]))  # premultiplied grey 50 at alpha 100
    out = load_image(img)
    assert_rgb(out, (2, 1))
    grey = round(50 * 255 / 100)
    assert close(px(out, (0, 0)), over_white((grey,) * 3, 100), tol=2)
    assert px(out, (1, 0)) == WHITE


def test_rgb_image_unchanged():
    img = gradient_rgb(7, 5)
    out = load_image(img)
    assert_rgb(out, (7, 5))
    assert np.array_equal(np.asarray(out), np.asarray(img))


# ------------------------------------------------------------------------------------------
# EXIF orientation and files
# ------------------------------------------------------------------------------------------


def test_exif_orientation_rotates(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # stored 40 wide x 20 high
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())

    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    out = load_image(path)
    assert_rgb(out, (20, 40))  # width and height swapped
    # after a clockwise rotation the former left (red) half is on top
    top, bottom = px(out, (10, 5)), px(out, (10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60

    # a PIL image opened by the caller gets the same treatment
    with Image.open(path) as raw:
        assert load_image(raw).size == (20, 40)


@pytest.mark.parametrize(
    "fmt,ext,tol",
    [("PNG", "png", 0), ("JPEG", "jpg", 12), ("WEBP", "webp", 12), ("TIFF", "tif", 0), ("BMP", "bmp", 0)],
)
def test_file_round_trip(tmp_path, fmt, ext, tol):
    img = gradient_rgb(33, 21)
    path = tmp_path / f"image.{ext}"
    img.save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    out = load_image(str(path))
    assert_rgb(out, (33, 21))
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(img, dtype=int))
    assert diff.mean() <= tol


def test_gif_round_trip_and_first_frame(tmp_path):
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    frames = [Image.new("RGB", (9, 7), c) for c in colors]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 3
    out = load_image(path)
    assert_rgb(out, (9, 7))
    assert px(out, (4, 3)) == (255, 0, 0)


def test_animated_webp_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 200, 0), (200, 0, 0)]]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    out = load_image(path)
    assert_rgb(out, (8, 8))
    assert close(px(out, (4, 4)), (0, 200, 0), tol=3)


def test_transparent_png_file_over_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (0, 128, 0, 255))
    path = tmp_path / "alpha.png"
    img.save(path)
    out = load_image(path)
    assert px(out, (0, 0)) == (0, 128, 0)
    assert px(out, (3, 3)) == WHITE


def test_16bit_png_file(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = load_image(path)
    assert [px(out, (i, 0))[0] for i in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("name,fmt", [("PHOTO.JPG", "JPEG"), ("Image.PNG", "PNG"), ("scan.TIFF", "TIFF")])
def test_upper_case_extension(tmp_path, name, fmt):
    path = tmp_path / name
    gradient_rgb(12, 10).save(path, format=fmt)
    assert_rgb(load_image(path), (12, 10))


def test_truncated_jpeg(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    data = buf.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    err = info.value
    assert str(path) in str(err)
    assert err.source == str(path)
    assert err.reason.startswith("truncated or corrupt image data")
    assert str(err) == f"cannot read image {path}: {err.reason}"


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    gradient_rgb(64, 64).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "empty file"
    assert "empty.png" in str(info.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "not an image (cannot identify image file)"
    assert "notes.jpg" in str(info.value)


def test_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # undone by monkeypatch after the test
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert "decompression bomb" in str(info.value)
    assert info.value.reason == "decompression bomb: 10000 pixels exceeds the limit of 2000 pixels"
    assert "bomb.png" in str(info.value)


def test_missing_path(tmp_path):
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "file not found"
    assert str(info.value) == f"cannot read image {path}: file not found"
    assert isinstance(info.value, ValueError)


def test_directory_path(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_name_overrides_source_and_error_pickles(tmp_path):
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "missing.png", name="sample 7")
    err = info.value
    assert err.source == "sample 7"
    assert str(err) == "cannot read image sample 7: file not found"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.source, copy.reason, str(copy)) == (err.source, err.reason, str(err))


# ------------------------------------------------------------------------------------------
# Arrays and tensors
# ------------------------------------------------------------------------------------------


def test_array_uint8_hwc():
    arr = np.asarray(gradient_rgb(6, 4))
    out = load_image(arr)
    assert_rgb(out, (6, 4))
    assert np.array_equal(np.asarray(out), arr)


def test_array_gray_and_single_channel():
    arr = np.full((4, 6), 77, dtype=np.uint8)
    for a in (arr, arr[..., None]):
        out = load_image(a)
        assert_rgb(out, (6, 4))
        assert px(out, (0, 0)) == (77, 77, 77)


def test_array_rgba_over_white():
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (10, 20, 30, 255)
    arr[0, 1] = (10, 20, 30, 0)
    arr[1, 0] = (200, 0, 0, 128)
    out = load_image(arr)
    assert_rgb(out, (2, 2))
    assert px(out, (0, 0)) == (10, 20, 30)
    assert px(out, (1, 0)) == WHITE
    assert close(px(out, (0, 1)), over_white((200, 0, 0), 128))


def test_array_uint16():
    arr = np.array([[0, 257 * 10, 32768, 65535]], dtype=np.uint16)
    out = load_image(arr)
    assert [px(out, (i, 0))[0] for i in range(4)] == [0, 10, 128, 255]


def test_array_float_and_bool():
    arr = np.array([[0.0, 0.5, 1.0, 1.5, -1.0]], dtype=np.float32)
    out = load_image(arr)
    assert [px(out, (i, 0))[0] for i in range(5)] == [0, 128, 255, 255, 0]
    out = load_image(np.array([[True, False]]))
    assert [px(out, (i, 0)) for i in range(2)] == [WHITE, (0, 0, 0)]


def test_array_non_contiguous():
    arr = np.asarray(gradient_rgb(8, 6))
    view = arr[:, ::-1]
    assert np.array_equal(np.asarray(load_image(view)), view)


def test_torch_chw_float_uint8_and_hw():
    arr = np.array(gradient_rgb(6, 4))
    chw_uint8 = torch.from_numpy(arr).permute(2, 0, 1)
    assert np.array_equal(np.asarray(load_image(chw_uint8)), arr)
    chw_float = chw_uint8.float() / 255.0
    assert np.array_equal(np.asarray(load_image(chw_float)), arr)
    out = load_image(torch.full((4, 6), 0.5))
    assert_rgb(out, (6, 4))
    assert px(out, (0, 0)) == (128, 128, 128)
    out = load_image(torch.zeros(1, 4, 6, dtype=torch.float64))
    assert px(out, (0, 0)) == (0, 0, 0)


@pytest.mark.parametrize(
    "bad,reason",
    [
        (np.zeros((5, 5, 7), dtype=np.uint8), "unsupported array shape (5, 5, 7)"),
        (np.zeros((2, 5, 5, 3), dtype=np.uint8), "unsupported array shape (2, 5, 5, 3)"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "empty image"),
        (np.zeros((5, 5), dtype=np.int64), "unsupported array dtype int64"),
        (np.full((5, 5), np.nan), "NaN"),
        (torch.zeros(5, 5, 5, 7), "unsupported tensor shape (5, 5, 5, 7)"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "unsupported tensor dtype"),
        (12345, "unsupported input type int"),
    ],
)
def test_bad_inputs(bad, reason):
    with pytest.raises(ImageLoadError) as info:
        load_image(bad)
    assert reason in info.value.reason
    assert str(info.value).startswith("cannot read image input (")


# ------------------------------------------------------------------------------------------
# Processor
# ------------------------------------------------------------------------------------------


def hand_pixel_values(img, resize_wh, crop_size, mean, std, resample=Image.Resampling.BILINEAR):
    """Independent reference: PIL resize -> centre crop -> /255 -> normalise, in float64."""
    resized = img.resize(resize_wh, resample=resample)
    w, h = resized.size
    left, top = int(round((w - crop_size) / 2)), int(round((h - crop_size) / 2))
    crop = np.asarray(resized.crop((left, top, left + crop_size, top + crop_size)), dtype=np.float64) / 255.0
    crop = (crop - np.array(mean)) / np.array(std)
    return crop.transpose(2, 0, 1)


def mixed_inputs(tmp_path):
    path = tmp_path / "a.jpg"
    gradient_rgb(320, 240).save(path)
    return [
        str(path),
        tmp_path / "a.jpg",
        gradient_rgb(10, 10),
        gradient_rgb(3000, 20),
        gradient_rgb(20, 3000),
        Image.new("RGBA", (50, 70), (1, 2, 3, 100)),
        Image.new("I;16", (64, 48)),
        np.zeros((31, 17), dtype=np.uint8),
        torch.rand(3, 40, 90),
    ]


@pytest.mark.parametrize("resize_mode", ["square", "shorter_side"])
def test_processor_mixed_batch_shape(tmp_path, resize_mode):
    proc = IQAImageProcessor(resize_mode=resize_mode)
    inputs = mixed_inputs(tmp_path)
    out = proc(inputs)
    pv = out["pixel_values"]
    assert isinstance(pv, torch.Tensor)
    assert pv.shape == (len(inputs), 3, 224, 224)
    assert pv.dtype == torch.float32
    assert torch.isfinite(pv).all()
    assert list(out.keys()) == proc.model_input_names


def test_processor_single_input_and_numpy_output():
    proc = IQAImageProcessor()
    out = proc(gradient_rgb(100, 80), return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray)
    assert out["pixel_values"].shape == (1, 3, 224, 224)
    assert out["pixel_values"].dtype == np.float32


def test_processor_4d_batches():
    proc = IQAImageProcessor(crop_size=32, resize_size=40)
    assert proc(torch.rand(2, 3, 50, 60))["pixel_values"].shape == (2, 3, 32, 32)
    assert proc(np.zeros((3, 50, 60, 3), np.uint8))["pixel_values"].shape == (3, 3, 32, 32)


def test_center_crop_matches_hand_computation_square():
    img = gradient_rgb(300, 200)
    proc = IQAImageProcessor()
    pv = proc(img)["pixel_values"][0].numpy()
    ref = hand_pixel_values(img, (244, 244), 224, CLIP_MEAN, CLIP_STD)
    assert np.abs(pv - ref).max() < 1e-6


def test_center_crop_matches_hand_computation_shorter_side_bicubic():
    img = gradient_rgb(300, 200)
    proc = IQAImageProcessor(resize_mode="shorter_side", resample="bicubic")
    pv = proc(img)["pixel_values"][0].numpy()
    ref = hand_pixel_values(img, (366, 244), 224, CLIP_MEAN, CLIP_STD, Image.Resampling.BICUBIC)
    assert np.abs(pv - ref).max() < 1e-6


def test_small_resize_size_upscales_to_fit_crop():
    img = gradient_rgb(90, 60)
    proc = IQAImageProcessor(resize_mode="shorter_side", resize_size=32, crop_size=64)
    assert proc.resized_size(90, 60) == (96, 64)
    pv = proc(img)["pixel_values"]
    assert pv.shape == (1, 3, 64, 64)
    ref = hand_pixel_values(img, (96, 64), 64, CLIP_MEAN, CLIP_STD)
    assert np.abs(pv[0].numpy() - ref).max() < 1e-6

    square = IQAImageProcessor(resize_size=32, crop_size=64)
    assert square.resized_size(90, 60) == (64, 64)
    assert square(img)["pixel_values"].shape == (1, 3, 64, 64)


def test_random_crop_seeded():
    img = gradient_rgb(400, 300)
    proc = IQAImageProcessor(resize_mode="shorter_side")

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return proc([img, img], crop="random", generator=g)["pixel_values"]

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the generator advances between images
    # without a generator the global torch RNG is used
    torch.manual_seed(3)
    d = proc(img, crop="random")["pixel_values"]
    torch.manual_seed(3)
    assert torch.equal(d, proc(img, crop="random")["pixel_values"])


def test_random_crop_is_a_crop_of_the_resized_image():
    img = gradient_rgb(300, 200)
    proc = IQAImageProcessor(resize_mode="shorter_side", do_normalize=False)
    g = torch.Generator().manual_seed(5)
    pv = proc(img, crop="random", generator=g)["pixel_values"][0]
    g = torch.Generator().manual_seed(5)
    top = int(torch.randint(0, 244 - 224 + 1, (1,), generator=g))
    left = int(torch.randint(0, 366 - 224 + 1, (1,), generator=g))
    resized = np.asarray(img.resize((366, 244), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    ref = resized[top : top + 224, left : left + 224].transpose(2, 0, 1)
    assert np.abs(pv.numpy() - ref).max() < 1e-6


def test_flip_seeded():
    img = gradient_rgb(260, 250)
    proc = IQAImageProcessor()
    base = proc(img)["pixel_values"][0]
    g = torch.Generator().manual_seed(0)
    out = proc([img] * 16, flip=True, generator=g)["pixel_values"]
    flipped = [bool(torch.equal(o, base.flip(-1))) for o in out]
    unflipped = [bool(torch.equal(o, base)) for o in out]
    assert all(f != u for f, u in zip(flipped, unflipped))
    assert any(flipped) and any(unflipped)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(out, proc([img] * 16, flip=True, generator=g)["pixel_values"])


def test_save_and_load_round_trip(tmp_path):
    proc = IQAImageProcessor(
        crop_size=160,
        resize_size=180,
        resize_mode="shorter_side",
        resample="lanczos",
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_normalize=False,
    )
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = IQAImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == proc.to_dict()
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 180} and saved["crop_size"] == {"height": 160, "width": 160}
    assert "resize_mode" not in saved and "resize_size" not in saved  # one way to say it: the standard schema
    assert loaded.crop_size == {"height": 160, "width": 160} and loaded.crop_side == 160
    assert loaded.resize_size == 180
    assert loaded.resize_mode == "shorter_side"
    assert loaded.resample == "lanczos"
    assert loaded.image_mean == list(IMAGENET_MEAN)
    assert loaded.image_std == list(IMAGENET_STD)
    assert loaded.do_normalize is False
    assert not hasattr(loaded, "image_processor_type")
    img = gradient_rgb(200, 150)
    assert torch.equal(loaded(img)["pixel_values"], proc(img)["pixel_values"])
    # settings can be overridden at load time
    assert IQAImageProcessor.from_pretrained(tmp_path, resize_mode="square").resize_mode == "square"


def test_defaults():
    proc = IQAImageProcessor()
    assert (proc.crop_side, proc.resize_size, proc.resize_mode, proc.resample) == (224, 244, "square", "bilinear")
    assert proc.size == {"height": 244, "width": 244} and proc.crop_size == {"height": 224, "width": 224}
    assert proc.image_mean == list(CLIP_MEAN) and proc.image_std == list(CLIP_STD)
    assert proc.do_normalize is True
    assert proc.model_input_names == ["pixel_values"]


def test_imagenet_normalisation_option():
    img = gradient_rgb(250, 260)
    clip = IQAImageProcessor()(img)["pixel_values"][0]
    imnet = IQAImageProcessor(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)(img)["pixel_values"][0]
    raw = IQAImageProcessor(do_normalize=False)(img)["pixel_values"][0]
    assert not torch.allclose(clip, imnet)
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    m_c, s_c = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    m_i, s_i = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(imnet, (raw - m_i) / s_i, atol=1e-5)
    assert torch.allclose(clip, (raw - m_c) / s_c, atol=1e-5)
    assert torch.allclose(imnet * s_i + m_i, clip * s_c + m_c, atol=1e-5)


def test_to_tensor():
    proc = IQAImageProcessor()
    img = gradient_rgb(7, 5)
    t = proc.to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    assert proc.to_tensor(Image.new("L", (3, 2), 255)).eq(1).all()


def test_batch_error_names_the_input(tmp_path):
    proc = IQAImageProcessor()
    with pytest.raises(ImageLoadError) as info:
        proc([gradient_rgb(30, 30), np.zeros((5, 5, 7), np.uint8)])
    assert info.value.source == "input #1 (numpy array)"
    assert "unsupported array shape (5, 5, 7)" in str(info.value)
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError) as info:
        proc([gradient_rgb(30, 30), missing])
    assert info.value.source == str(missing)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"crop": "middle"}, ValueError, "crop must be"),
        ({"return_tensors": "tf"}, ValueError, "return_tensors"),
        ({"flip": "yes"}, ValueError, "flip"),
        ({"generator": 42}, TypeError, "generator"),
    ],
)
def test_preprocess_argument_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        IQAImageProcessor()(gradient_rgb(30, 30), **kwargs)


def test_preprocess_empty_list():
    with pytest.raises(ValueError, match="at least one image"):
        IQAImageProcessor()([])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"crop_size": 0}, "crop_size"),
        ({"crop_size": 22.5}, "crop_size"),
        ({"resize_size": -1}, "resize_size"),
        ({"resize_mode": "fit"}, "resize_mode"),
        ({"resample": "cubic"}, "resample"),
        ({"image_mean": (0.5, 0.5)}, "image_mean"),
        ({"image_std": (0.5, 0.0, 0.5)}, "image_std"),
        ({"do_normalize": "no"}, "do_normalize"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IQAImageProcessor(**kwargs)


def test_resample_accepts_pil_enum():
    assert IQAImageProcessor(resample=Image.Resampling.BICUBIC).resample == "bicubic"
    assert IQAImageProcessor(resample="LANCZOS").resample == "lanczos"


# ---- crop_and_normalize: the one crop + normalisation, shared with the training image cache ----------


@pytest.mark.parametrize("do_normalize", [True, False])
def test_crop_and_normalize_is_process_images_last_step(do_normalize):
    processor = IQAImageProcessor(crop_size=16, resize_size=20, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                                  do_normalize=do_normalize)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (27, 31, 3), dtype=np.uint8))
    resized = np.asarray(processor.resize(image)).transpose(2, 0, 1)
    centre = processor.process_image(image)
    left, top, _, _ = processor.crop_box(20, 20)
    np.testing.assert_array_equal(processor.crop_and_normalize(resized, top, left), centre)
    # a CPU tensor works the same; the flip mirrors the columns
    flipped = processor.crop_and_normalize(torch.from_numpy(resized.copy()), 3, 1, flip=True)
    np.testing.assert_array_equal(flipped, processor.crop_and_normalize(resized, 3, 1)[:, :, ::-1])
    unit = resized[:, 3:19, 1:17].astype(np.float32) / np.float32(255.0)
    if do_normalize:
        unit = (unit - np.float32(IMAGENET_MEAN).reshape(3, 1, 1)) / np.float32(IMAGENET_STD).reshape(3, 1, 1)
    np.testing.assert_array_equal(processor.crop_and_normalize(resized, 3, 1), unit)
    with pytest.raises(ValueError, match="does not fit"):
        processor.crop_and_normalize(resized, 5, 0)


def test_image_cache_crops_with_the_processor():
    from grmp_iqa_hf.training.common import rng_for
    from grmp_iqa_hf.training.data import ImageCache

    processor = IQAImageProcessor(crop_size=16, resize_size=20)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8) for i in range(3)]
    cache = ImageCache(processor, images, progress=False, num_workers=1)
    # centre crops are exactly the processor's
    torch.testing.assert_close(cache.batch([0, 2]), processor(images[:3:2])["pixel_values"], rtol=0, atol=0)
    crop = cache.crop_at(1, 2, 3, flip=True)
    resized = np.asarray(processor.resize(load_image(images[1]))).transpose(2, 0, 1)
    np.testing.assert_array_equal(crop.numpy(), processor.crop_and_normalize(resized, 2, 3, flip=True))
    # keyed random crops do not depend on the batch; a subset view shares the decoded images
    assert torch.equal(cache.batch([2, 0], keys=(7,))[0], cache.batch([2], keys=(7,))[0])
    view = cache.subset([2, 0])
    assert len(view) == 2 and view.images[0] is cache.images[2]
    torch.testing.assert_close(view.crop(0, rng_for(7, 2), flip=True), cache.crop(2, rng_for(7, 2), flip=True),
                               rtol=0, atol=0)


def test_standard_schema_and_the_older_keys():
    """`size` / `crop_size` dicts as transformers' processors write them; the keys of files saved before
    (integer `crop_size`, `resize_size`, `resize_mode`) read the same, and override `size` when both are given."""
    standard = IQAImageProcessor(size={"shortest_edge": 180}, crop_size={"height": 160, "width": 160})
    older = IQAImageProcessor(crop_size=160, resize_size=180, resize_mode="shorter_side")
    assert standard.to_dict() == older.to_dict()
    assert (standard.resize_mode, standard.resize_size, standard.crop_side) == ("shorter_side", 180, 160)
    square = IQAImageProcessor(size={"height": 70, "width": 70}, crop_size=64)
    assert (square.resize_mode, square.resize_size) == ("square", 70)
    assert IQAImageProcessor(size={"height": 70, "width": 70}, crop_size=64, resize_mode="shorter_side").size == {
        "shortest_edge": 70}
    assert IQAImageProcessor(crop_size=64).size == {"height": 70, "width": 70}  # 244/224 of the crop by default
    img = gradient_rgb(200, 150)
    assert torch.equal(standard(img)["pixel_values"], older(img)["pixel_values"])
    for bad in ({"height": 70, "width": 80}, {"longest_edge": 70}, {"shortest_edge": 0}):
        with pytest.raises(ValueError, match="size"):
            IQAImageProcessor(size=bad, crop_size=64)
    with pytest.raises(ValueError, match="crop_size must be square"):
        IQAImageProcessor(crop_size={"height": 64, "width": 60})


def test_encoded_bytes_load_like_the_file(tmp_path):
    """An encoded file's bytes (an upload, a dataset row) decode exactly as the file does, errors included."""
    path = tmp_path / "photo.jpg"
    gradient_rgb(70, 50).save(path, quality=90)
    data = path.read_bytes()
    from_file = np.asarray(load_image(path))
    for encoded in (data, bytearray(data), memoryview(data)):
        assert np.array_equal(np.asarray(load_image(encoded)), from_file)
    with pytest.raises(ImageLoadError, match="upload: empty image data"):
        load_image(b"", name="upload")
    with pytest.raises(ImageLoadError, match=r"upload: not an image \(cannot identify image file\)"):
        load_image(b"not an image at all", name="upload")
    with pytest.raises(ImageLoadError, match="truncated or corrupt image data"):
        load_image(data[: len(data) // 2], name="upload")
