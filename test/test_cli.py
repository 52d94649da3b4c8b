"""``sam3d-reconstruct``: bad inputs sent through main(argv), and end-to-end runs."""

import base64
import importlib
import importlib.util
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam3d_ros.core.cli import main

W, H = 32, 24
FX = FY = 30.0
CX, CY = 15.5, 11.5


def png(path, array):
    Image.fromarray(array).save(path, format="PNG")
    return path


def points_map():
    d = np.full((H, W), 1.5, np.float32)
    us, vs = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return np.stack([(us - CX) * d / FX, (vs - CY) * d / FY, d], axis=-1)


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    png(d / "rgb.png", np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    mask = np.zeros((H, W), np.uint8)
    mask[4:10, 4:10] = 255
    png(d / "mask.png", mask)
    png(d / "small_mask.png", mask[:, :-2])
    png(d / "empty_mask.png", np.zeros((H, W), np.uint8))
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    np.save(d / "points.npy", points_map())
    np.save(d / "wrong_shape.npy", np.zeros((H, W, 2), np.float32))
    np.save(d / "wrong_size.npy", points_map()[:-1])
    np.save(d / "all_nan.npy", np.full((H, W, 3), np.nan, np.float32))
    np.save(d / "depth.npy", np.full((H, W), 1.5, np.float32))
    evil = np.empty(1, dtype=object)
    evil[0] = {"x": 1}
    np.save(d / "evil.npy", evil, allow_pickle=True)
    (d / "evil.pkl").write_bytes(pickle.dumps(points_map()))
    return d


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


BAD_INPUTS = [
    # (argv after --image, field, reason fragment)
    (["--image", "nope.png"], "image_url", "file not found"),
    (["--image", "ftp://example.com/rgb.png"], "image_url", "unsupported URI scheme"),
    (["--image", "https://example.com/rgb.png"], "image_url", "--allow-http"),
    (["--image", "{d}/bad.png"], "image_url", "cannot decode image"),
    (["--pointmap", "{d}/wrong_shape.npy"], "pointmap_url", "HxW"),
    (["--pointmap", "{d}/wrong_size.npy"], "pointmap_url", "the image is 32x24"),
    (["--pointmap", "{d}/all_nan.npy"], "pointmap_url", "no valid point"),
    (["--pointmap", "{d}/evil.npy"], "pointmap_url", "pickle"),
    (["--pointmap", "{d}/evil.pkl"], "pointmap_url", "pickle"),
    (["--depth", "{d}/depth.npy"], "pointmap_url", "needs intrinsics"),
    (["--mask", "{d}/mask.png", "--mask", "{d}/small_mask.png"], "mask_urls[1]", "30x24"),
    (["--mask", "{d}/empty_mask.png"], "mask_urls[0]", "empty"),
    (["--point", "32,3"], "point_prompts[0].x", "outside the image"),
    (["--point", "3,3", "--point", "3,24"], "point_prompts[1].y", "outside the image"),
    (["--point", "3,3,2"], "point_prompts[0].label", "must be 0"),
    (["--box", "9,1,3,5"], "box_prompts[0].x_max", "less than x_min"),
    (["--box", "1,2,3"], "--box[0]", "expected"),
    (["--intrinsics", "1,2,3"], "--intrinsics", "expected"),
    (["--seed", "-3"], "seed", "must be in"),
    (["--segmentation-backend", "nope"], "segmentation_backend", "unknown backend"),
]


@pytest.mark.parametrize("extra, field, reason", BAD_INPUTS)
def test_bad_input_exit_2_nothing_written(inputs, tmp_path, capsys, extra, field, reason):
    extra = [a.format(d=inputs) for a in extra]
    argv = ["--image", inputs / "rgb.png", *extra, "--output", tmp_path / "out"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert f"error: {field}: " in err and reason in err, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no temp dir


def write_request(path, request):
    path.write_text(json.dumps(request))
    return path


def test_request_file_field_names(inputs, tmp_path, capsys):
    boxes = [{"x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5}] * 2
    boxes.append({"x_min": 1, "y_min": 1, "x_max": 40, "y_max": 5})
    req = write_request(inputs / "req.json", {"image_url": "rgb.png", "box_prompts": boxes})
    code, _, err = run(["--request", req, "--output", tmp_path / "out"], capsys)
    assert code == 2
    assert "error: box_prompts[2].x_max: 40 is outside the image" in err
    assert not (tmp_path / "out").exists()


def test_oversized_data_uri(inputs, tmp_path, capsys):
    uri = "data:image/png;base64," + base64.b64encode(b"\0" * 4096).decode()
    req = write_request(inputs / "req.json", {"image_url": uri})
    argv = ["--request", req, "--max-input-mb", "0.001", "--output", tmp_path / "out"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "error: image_url: oversized" in err
    assert not (tmp_path / "out").exists()


def test_path_outside_allowed_roots(inputs, tmp_path, capsys):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    argv = ["--image", inputs / "rgb.png", "--allowed-root", allowed, "--output", tmp_path / "o"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "error: image_url: " in err and "outside the allowed roots" in err
    assert not (tmp_path / "o").exists()


def test_relative_request_paths_cannot_escape_allowed_root(inputs, tmp_path, capsys):
    req = write_request(inputs / "req.json", {"image_url": "../in/../in/rgb.png"})
    argv = ["--request", req, "--allowed-root", tmp_path / "elsewhere", "--output", tmp_path / "o"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "outside the allowed roots" in err


@pytest.mark.parametrize(
    "content, reason",
    [("{not json", "invalid JSON"), ("[1, 2]", "JSON object"), (None, "file not found")],
)
def test_bad_request_file(inputs, tmp_path, capsys, content, reason):
    path = inputs / "req.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run(["--request", path, "--output", tmp_path / "out"], capsys)
    assert code == 2 and "error: --request: " in err and reason in err


def test_missing_image(tmp_path, capsys):
    code, _, err = run(["--prompt", "mug", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "error: image_url: is required" in err


def test_existing_nonempty_output_untouched(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, stdout, err = run(["--image", inputs / "rgb.png", "--output", out], capsys)
    assert code == 2 and "error: --output: " in err and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    assert stdout == ""


def test_output_is_a_file(inputs, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    code, _, err = run(["--image", inputs / "rgb.png", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "not a directory" in err


def test_usage_errors_exit_2(capsys):
    assert main(["--image", "x.png"]) == 2  # --output is required
    assert main(["--version"]) == 0
    capsys.readouterr()


# ------------------------------------------------------------------------------ end to end


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tabletop"
EMBEDDED_RECONSTRUCTION = "sam3d_ros.backends.embedded.reconstruction"


@pytest.fixture(scope="module")
def scene_dir():
    """The committed example scene (tools/make_example_scene.py): 3 objects, box prompts."""
    if not (EXAMPLE / "request.json").is_file():
        pytest.skip("examples/tabletop is missing (run tools/make_example_scene.py)")
    for module in ("sam3d_ros.backends.embedded.segmentation", EMBEDDED_RECONSTRUCTION):
        if importlib.util.find_spec(module) is None:  # only skip when the file is absent
            pytest.skip(f"{module} is not there yet")
    return EXAMPLE


def check_result_schema(result, run_dir, n_objects):
    files = [result["gaussian_splat"], result["model_glb"], result["artifacts_zip"]]
    files += result["individual_splats"] + result["individual_glbs"]
    assert len(result["individual_splats"]) == len(result["individual_glbs"]) == n_objects
    for entry in files:
        assert set(entry) >= {"url", "content_type", "file_name", "file_size"}
        assert entry["url"].startswith(run_dir.as_uri() + "/")
        path = Path(entry["url"][len("file://") :])
        assert path.is_file() and path.stat().st_size == entry["file_size"]
        assert path.name == entry["file_name"]
    assert [m["object_index"] for m in result["metadata"]] == list(range(n_objects))
    for meta in result["metadata"]:
        assert np.shape(meta["rotation"])[-1] == 4 and np.shape(meta["translation"])[-1] == 3
        assert np.shape(meta["scale"])[-1] == 3 and np.shape(meta["camera_pose"]) == (4, 4)
        assert np.isfinite(meta["translation"]).all()


def test_end_to_end_request(scene_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["--request", scene_dir / "request.json", "--output", out], capsys)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert json.loads(stdout) == result
    check_result_schema(result, out, 3)
    for stage in ("load", "segment", "reconstruct", "export"):  # progress on stderr
        assert f"] {stage}: " in err
    assert "[100%] export" in err
    # poses land near the ground-truth object centres (camera optical frame, metres)
    truth = np.load(scene_dir / "ground_truth.npz")["centres"]
    found = np.array([m["translation"][0] for m in result["metadata"]])
    assert np.abs(found - truth).max() < 0.04


def test_same_request_same_bytes(scene_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--request", scene_dir / "request.json", "--output", out, "--quiet"]
    assert run(argv, capsys)[0] == 0
    out.rename(tmp_path / "first")
    assert run(argv, capsys)[0] == 0
    first = {p.relative_to(tmp_path / "first"): p for p in (tmp_path / "first").rglob("*")}
    second = {p.relative_to(out): p for p in out.rglob("*")}
    assert sorted(first) == sorted(second)
    assert any(p.suffix == ".glb" for p in first) and any(p.suffix == ".ply" for p in first)
    for rel, path in first.items():
        if path.is_file():
            assert path.read_bytes() == second[rel].read_bytes(), rel


def test_flags_with_file_and_data_uris(scene_dir, tmp_path, capsys):
    request = json.loads((scene_dir / "request.json").read_text())
    box = request["box_prompts"][0]
    pointmap = (scene_dir / "pointmap.npz").read_bytes()
    argv = [
        "--image",
        (scene_dir / "rgb.png").as_uri(),
        "--pointmap",
        "data:application/octet-stream;base64," + base64.b64encode(pointmap).decode(),
        "--box",
        f"{box['x_min']},{box['y_min']},{box['x_max']},{box['y_max']}",
        "--seed",
        "7",
        "--output",
        tmp_path / "run",
        "--allowed-root",
        scene_dir,
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads(stdout)
    check_result_schema(result, tmp_path / "run", 1)
    assert json.loads((tmp_path / "run" / "request.json").read_text())["box_prompts"] == [
        {k: box[k] for k in ("x_min", "y_min", "x_max", "y_max")}
    ]


def test_depth_png_with_intrinsics_flags(scene_dir, tmp_path, capsys):
    npz = np.load(scene_dir / "pointmap.npz")
    k = npz["K"]
    png(tmp_path / "depth.png", npz["depth"])
    box = json.loads((scene_dir / "request.json").read_text())["box_prompts"][2]
    argv = [
        "--image",
        scene_dir / "rgb.png",
        "--depth",
        tmp_path / "depth.png",
        "--intrinsics",
        f"{k[0, 0]},{k[1, 1]},{k[0, 2]},{k[1, 2]}",
        "--point",
        f"{(box['x_min'] + box['x_max']) // 2},{(box['y_min'] + box['y_max']) // 2}",
        "--output",
        tmp_path / "run",
        "--quiet",
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert err == ""
    check_result_schema(json.loads(stdout), tmp_path / "run", 1)


@pytest.mark.parametrize(
    "exc, code, message",
    [
        (RuntimeError("kaput"), 1, "error: BackendError: reconstruct failed: RuntimeError: kaput"),
        (MemoryError(), 1, "reconstruct failed: MemoryError"),
        (KeyboardInterrupt(), 130, "cancelled; nothing written"),
    ],
)
def test_internal_error_and_interrupt_write_nothing(
    scene_dir, tmp_path, capsys, monkeypatch, exc, code, message
):
    module = importlib.import_module(EMBEDDED_RECONSTRUCTION)

    def fail(self, frame, masks, seed):
        raise exc

    monkeypatch.setattr(module.EmbeddedReconstructor, "reconstruct", fail)
    argv = ["--request", scene_dir / "request.json", "--output", tmp_path / "run"]
    got, stdout, err = run(argv, capsys)
    assert got == code and message in err, err
    assert stdout == "" and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- failure paths (issue 10)


def test_one_object_without_depth_does_not_fail_the_others(scene_dir, tmp_path, capsys):
    npz = np.load(scene_dir / "pointmap.npz")
    depth = npz["depth"].copy()
    request = json.loads((scene_dir / "request.json").read_text())
    box = request["box_prompts"][1]  # object 2: its depth is missing (a black, shiny object)
    depth[box["y_min"]: box["y_max"] + 1, box["x_min"]: box["x_max"] + 1] = 0
    np.savez(tmp_path / "holed.npz", depth=depth, K=npz["K"])
    request.update(image_url=str(scene_dir / "rgb.png"), pointmap_url=str(tmp_path / "holed.npz"))
    req = write_request(tmp_path / "req.json", request)
    out = tmp_path / "run"
    code, stdout, err = run(["--request", req, "--output", out], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    check_result_schema(result, out, 2)
    assert [m["object_id"] for m in result["metadata"]] == [1, 3]
    [failed] = result["failed_objects"]
    # Nothing in its box has depth: the segmentation finds no object there and says so.
    assert failed["object_id"] == 2 and "pixels without depth inside the box" in failed["reason"]
    assert failed["stage"] == "segment"
    assert "warning: object 2 not segmented: " in err and "1 failed" in err
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["failed_objects"] == result["failed_objects"]
    assert sorted(p.name for p in (out / "objects").iterdir()) == [
        "object_1.glb", "object_1.ply", "object_3.glb", "object_3.ply"]


def test_every_object_without_depth_is_bad_input(scene_dir, tmp_path, capsys):
    npz = np.load(scene_dir / "pointmap.npz")
    depth = npz["depth"].copy()
    request = json.loads((scene_dir / "request.json").read_text())
    for box in request["box_prompts"]:
        depth[box["y_min"]: box["y_max"] + 1, box["x_min"]: box["x_max"] + 1] = 0
    np.savez(tmp_path / "holed.npz", depth=depth, K=npz["K"])
    request.update(image_url=str(scene_dir / "rgb.png"), pointmap_url=str(tmp_path / "holed.npz"))
    req = write_request(tmp_path / "req.json", request)
    code, stdout, err = run(["--request", req, "--output", tmp_path / "run"], capsys)
    assert code == 2 and stdout == ""
    # The first object's refusal, naming its prompt field and box (the engine's remapping of a
    # reconstruction's mask_urls[i] to the query's position is test_engine's).
    assert ("error: box_prompts: object 1: nothing but the support (the table) or pixels "
            "without depth inside the box (") in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["many", "-1", "1.5"])
def test_a_bad_worker_count_is_refused_before_any_work(scene_dir, tmp_path, capsys, value):
    argv = ["--request", scene_dir / "request.json", "--output", tmp_path / "run",
            f"--workers={value}"]
    code, stdout, err = run(argv, capsys)
    assert code == 2 and stdout == "", err
    assert "error: --workers: " in err and value in err
    assert not (tmp_path / "run").exists()


def test_worker_counts_give_the_same_run(scene_dir, tmp_path, capsys):
    results = []
    for workers in ("1", "3"):
        out = tmp_path / f"run{workers}"
        code, stdout, err = run(["--request", scene_dir / "request.json", "--output", out,
                                 "--workers", workers], capsys)
        assert code == 0, err
        results.append(json.loads((out / "metadata.json").read_text()))
    assert results[0] == results[1]


@pytest.mark.parametrize("array", [
    np.full((H, W), 1500.0, np.float32),  # depth, millimetres saved as float
    points_map() * 1000.0,  # points in millimetres
])
def test_float_depth_in_millimetres_is_refused(inputs, tmp_path, capsys, array):
    # The same rule as the node's for 32FC1 (was: exit 0, objects ~1.5 km away, a warning).
    np.save(inputs / "mm.npy", array)
    argv = ["--image", inputs / "rgb.png", "--depth", inputs / "mm.npy", "--intrinsics",
            f"{30.0},{30.0},{15.5},{11.5}", "--output", tmp_path / "out"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "", err
    assert "error: pointmap_url: float depth must be metres; its median 1500.0 looks like " \
           "millimetres" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix, save", [
    (".npy", lambda path, a: np.save(path, a)),
    (".png", lambda path, a: Image.fromarray(a).save(path)),
])
def test_metres_stored_as_16_bit_integers_are_refused(inputs, tmp_path, capsys, suffix, save):
    # 16-bit depth is millimetres (REP 118); metres rounded to integers put everything within
    # 2 mm of the camera (was: "no valid depth inside its mask", naming a mask never given).
    save(inputs / f"m16{suffix}", np.full((H, W), 1, np.uint16))
    argv = ["--image", inputs / "rgb.png", "--depth", inputs / f"m16{suffix}", "--intrinsics",
            f"{30.0},{30.0},{15.5},{11.5}", "--output", tmp_path / "out"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "", err
    assert "error: pointmap_url: 16-bit depth must be millimetres; its median 1 mm" in err
    assert not (tmp_path / "out").exists()


def test_ten_thousand_boxes_refused_before_any_work(inputs, tmp_path, capsys):
    boxes = [{"x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5}] * 10000
    req = write_request(inputs / "req.json", {"image_url": "rgb.png", "box_prompts": boxes})
    code, out, err = run(["--request", req, "--output", tmp_path / "out"], capsys)
    assert code == 2 and out == ""
    assert "error: box_prompts: 10000 prompts; at most 512" in err
    argv = ["--image", inputs / "rgb.png", "--pointmap", inputs / "points.npy", "--box",
            "1,1,5,5", "--box", "8,8,12,12", "--max-objects", "1", "--output", tmp_path / "out"]
    code, out, err = run(argv, capsys)
    assert code == 2 and "error: box_prompts: 2 objects prompted; at most 1" in err
    assert list(tmp_path.iterdir()) == [inputs]


def test_npy_declaring_112_gib_is_bad_input(inputs, tmp_path, capsys):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 3)})
    (inputs / "bomb.npy").write_bytes(header.getvalue() + b"\0" * 4096)
    argv = ["--image", inputs / "rgb.png", "--pointmap", inputs / "bomb.npy",
            "--output", tmp_path / "out"]
    code, out, err = run(argv, capsys)
    assert code == 2, err  # was "internal error: MemoryError", exit 1
    assert "error: pointmap_url: pointmap is 100000x100000 but the image is 32x24" in err


@pytest.mark.parametrize("depth", [100000, 500])
def test_deeply_nested_json_is_bad_input(inputs, tmp_path, capsys, depth):
    text = '{"image_url": "rgb.png", "extra": ' + "[" * depth + "]" * depth + "}"
    (inputs / "req.json").write_text(text)
    code, out, err = run(["--request", inputs / "req.json", "--output", tmp_path / "out"], capsys)
    assert code == 2 and out == "", err  # was RecursionError, exit 1 (after the work for 500)
    assert "nested" in err and "64 levels" in err
    assert "] segment: " not in err  # refused while reading the request


def test_output_under_a_file_refused_before_any_work(inputs, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["--image", inputs / "rgb.png", "--pointmap", inputs / "points.npy",
            "--output", tmp_path / "afile" / "sub" / "out"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "", err  # was NotADirectoryError at export, exit 1
    assert "error: --output: " in err and "afile' is not a directory" in err
    assert "] load: " not in err


def test_symlinked_output_dir(scene_dir, tmp_path, capsys):
    target = tmp_path / "disk" / "run1"
    target.mkdir(parents=True)
    link = tmp_path / "latest"
    link.symlink_to(target)
    argv = ["--request", scene_dir / "request.json", "--output", link, "--quiet"]
    code, out, err = run(argv, capsys)
    assert code == 0, err  # was refused as "already exists" after all the work
    assert link.is_symlink() and (link / "result.json").is_file()
    check_result_schema(json.loads(out), target, 3)
    assert sorted(p.name for p in target.parent.iterdir()) == ["run1"]  # no temp dir left
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, _, err = run(["--request", scene_dir / "request.json", "--output", dangling], capsys)
    assert code == 2 and "symlink to nothing" in err


def test_interrupt_after_the_run_is_written_says_so(scene_dir, tmp_path, capsys, monkeypatch):
    import sam3d_ros.core.cli as cli

    class Interrupted:
        def write(self, text):
            raise KeyboardInterrupt

        def flush(self):
            pass

    monkeypatch.setattr(cli.sys, "stdout", Interrupted())
    out = tmp_path / "run"
    code, _, err = run(["--request", scene_dir / "request.json", "--output", out], capsys)
    assert code == 130
    assert f"cancelled after the run was written to {out}" in err
    assert "nothing written" not in err and (out / "result.json").is_file()


def test_http_allow_host_flag(scene_dir, tmp_path, capsys):
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(scene_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rgb.png"
        argv = ["--request", scene_dir / "request.json", "--image", url, "--allow-http",
                "--quiet", "--output", tmp_path / "run"]
        code, _, err = run(argv, capsys)
        assert code == 2 and "error: image_url: download refused: 127.0.0.1 is a loopback" in err
        code, out, err = run(argv + ["--http-allow-host", "127.0.0.1"], capsys)
        assert code == 0, err
        check_result_schema(json.loads(out), tmp_path / "run", 3)
    finally:
        server.shutdown()
        server.server_close()
