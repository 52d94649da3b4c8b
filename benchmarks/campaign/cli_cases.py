"""``sam3d-reconstruct`` cases: each bad input is one CLI process on small generated inputs.

How a case is run and judged: :mod:`campaign.cli_runner`. The good input is
``examples/tabletop`` subsampled 4× (160×120, three box prompts, uint16 depth in an NPZ with K).
"""

from __future__ import annotations

import base64
import os
import signal
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
from PIL import Image

from campaign.cli_runner import BOMB_RSS_MB, CliWorkspace, check_bad, during_export
from campaign.outcome import Case, Outcome
from campaign.payloads import (
    BOMB_MEMBER_BYTES,
    nested_json,
    npy_declaring,
    npz_bomb,
    png_bytes,
)


def _save_npz(ws: CliWorkspace, name: str, **arrays: np.ndarray) -> str:
    path = ws.path(name)
    np.savez(path, **arrays)
    return name


def _save_npy(ws: CliWorkspace, name: str, array: np.ndarray, allow_pickle: bool = False) -> str:
    np.save(ws.path(name), array, allow_pickle=allow_pickle)
    return name


def _write(ws: CliWorkspace, name: str, data: bytes) -> str:
    ws.path(name).write_bytes(data)
    return name


def _depth_variant(ws: CliWorkspace, name: str, depth: np.ndarray) -> List[str]:
    return ws.request_with(name, pointmap_url=_save_npz(ws, name + ".npz", depth=depth, K=ws.k))


def _png_file(ws: CliWorkspace, name: str, array: np.ndarray, fmt: str = "PNG") -> str:
    Image.fromarray(array).save(ws.path(name), format=fmt)
    return name


def _mask(ws: CliWorkspace, name: str, array: np.ndarray) -> List[str]:
    return ws.request_with(name, mask_urls=[_png_file(ws, name + ".png", array)])


# -------------------------------------------------------------------------------- the cases


def _image_cases() -> List[Case]:
    def bad_png(ws):
        return ws.request_with("bad-png", image_url=_write(ws, "bad.png", b"\x89PNG\r\n\x1a\nxx"))

    def truncated_png(ws):
        data = (ws.inp / "rgb.png").read_bytes()
        return ws.request_with("trunc-png", image_url=_write(ws, "trunc.png", data[:300]))

    def truncated_jpeg(ws):
        _png_file(ws, "full.jpg", ws.rgb, "JPEG")
        data = ws.path("full.jpg").read_bytes()
        half = _write(ws, "trunc.jpg", data[: len(data) // 2])
        return ws.request_with("trunc-jpg", image_url=half)

    def zero_png(ws):
        return ws.request_with("zero-png", image_url=_write(ws, "zero.png", png_bytes(0, 0, 8, 2)))

    def bomb_png(ws):
        # 30000×30000 1-bit grey: 110 KB on disk, 900 Mpx (2.7 GB as RGB) once decoded.
        data = png_bytes(30000, 30000, 1, 0, bytes(30000 // 8))
        return ws.request_with("bomb-png", image_url=_write(ws, "bomb.png", data))

    def data_uri(name, uri):
        return lambda ws: ws.request_with(name, image_url=uri)

    def oversized_uri(ws):
        payload = base64.b64encode(bytes(50 * 2**20 + 64)).decode()
        return ws.request_with("uri-oversized", image_url="data:image/png;base64," + payload)

    def outside_root(ws):
        return ["--request", ws.inp / "good.json", "--image", ws.other / "rgb.png",
                "--allowed-root", ws.inp]

    def symlink_escape(ws):
        link = ws.path("escape.png")
        if not os.path.lexists(link):
            link.symlink_to(ws.other / "rgb.png")
        return [*ws.request_with("symlink", image_url="escape.png"), "--allowed-root", ws.inp]

    def dotdot_escape(ws):
        return [*ws.request_with("dotdot", image_url="../other/rgb.png"), "--allowed-root", ws.inp]

    def symlink_loop(ws):
        link = ws.path("loop.png")
        if not os.path.lexists(link):
            link.symlink_to(link)
        return ws.request_with("loop", image_url="loop.png")

    def http(path, timeout):
        return lambda ws: [*ws.request_with(f"http{path.replace('/', '-')}",
                                            image_url=ws.http_url(path)),
                           "--allow-http", "--http-timeout", str(timeout)]

    cases = [
        ("image-missing-file", "image_url names a file that does not exist",
         lambda ws: ws.request_with("image-missing", image_url="nope.png"), True),
        ("image-corrupt-png", "PNG signature followed by garbage", bad_png, True),
        ("image-truncated-png", "the first 300 bytes of a valid PNG", truncated_png, False),
        ("image-truncated-jpeg", "the first half of a valid JPEG", truncated_jpeg, False),
        ("image-zero-size", "a PNG declaring 0×0 pixels", zero_png, False),
        ("image-decompression-bomb", "PNG of 110 KB declaring 30000×30000 pixels", bomb_png,
         True),
        ("image-data-uri-no-comma", "data: URI without a comma",
         data_uri("uri-comma", "data:image/png;base64"), True),
        ("image-data-uri-bad-base64", "data: URI with invalid base64",
         data_uri("uri-b64", "data:image/png;base64,@@@@"), False),
        ("image-data-uri-not-image", "data: URI holding text, not an image",
         data_uri("uri-text", "data:text/plain," + "hello"), False),
        ("image-data-uri-oversized", "data: URI of 50 MiB + 64 bytes (the limit is 50 MiB)",
         oversized_uri, False),
        ("image-scheme-ftp", "ftp:// URL", data_uri("ftp", "ftp://example.com/rgb.png"), False),
        ("image-http-disabled", "https:// URL without --allow-http",
         data_uri("http", "https://example.com/rgb.png"), False),
        ("image-file-uri-remote-host", "file://example.com/rgb.png",
         data_uri("file-host", "file://example.com/rgb.png"), False),
        ("image-outside-allowed-root", "--image outside the only --allowed-root", outside_root,
         False),
        ("image-symlink-escape", "a symlink inside --allowed-root to a file outside it",
         symlink_escape, True),
        ("image-dotdot-escape", "image_url ../other/rgb.png with --allowed-root in/",
         dotdot_escape, False),
        ("image-symlink-loop", "image_url is a symlink to itself", symlink_loop, False),
        ("image-is-directory", "image_url names a directory",
         lambda ws: ws.request_with("dir", image_url="."), False),
        ("image-url-not-string", "image_url is the number 42",
         lambda ws: ws.request_with("num", image_url=42), False),
        ("image-url-missing", "request without image_url",
         lambda ws: ws.request_with("no-image", image_url=None), False),
    ]
    out = [_bad(name, text, "image_url", build, quick) for name, text, build, quick in cases]
    out += [
        _bad("http-loopback", "--allow-http, image_url on 127.0.0.1 (loopback must be refused)",
             "image_url", http("/rgb.png", 5), False),
        _bad("http-one-byte-per-second", "--allow-http --http-timeout 2, a server sending 1 "
             "byte/s (liveness bound 30 s: a total deadline, or loopback refused)", "image_url",
             http("/slow", 2), True,
             timeout_s=30.0),
    ]
    return out


def _pointmap_cases() -> List[Case]:
    def variant(name, make):
        return lambda ws: _depth_variant(ws, name, make(ws))

    def pickled(ws):
        evil = np.empty(1, dtype=object)
        evil[0] = {"x": 1}
        return ws.request_with("pickled", pointmap_url=_save_npy(ws, "evil.npy", evil, True))

    def raw_pickle(ws):
        import pickle

        name = _write(ws, "evil.pkl", pickle.dumps(ws.depth))
        return ws.request_with("pickle", pointmap_url=name)

    def bomb(ws):
        if not ws.path("bomb.npz").is_file():
            npz_bomb(ws.path("bomb.npz"))
        return ws.request_with("npz-bomb", pointmap_url="bomb.npz")

    def declares(zipped):
        def build(ws):
            name = "huge.npz" if zipped else "huge.npy"
            npy_declaring(ws.path(name), (100000, 100000, 3), zipped)
            return ws.request_with(name, pointmap_url=name)
        return build

    def no_key(ws):
        return ws.request_with("no-key", pointmap_url=_save_npz(ws, "nokey.npz", a=ws.depth,
                                                                b=ws.depth))

    def two_channel(ws):
        pts = np.zeros((ws.height, ws.width, 2), np.float32)
        return ws.request_with("two-ch", pointmap_url=_save_npy(ws, "twoch.npy", pts))

    def png8(ws):
        return ws.request_with("png8", pointmap_url=_png_file(ws, "depth8.png",
                                                              (ws.depth // 256).astype(np.uint8)))

    def not_npy(ws):
        return ws.request_with("not-npy", pointmap_url=_write(ws, "noise.bin", os.urandom(4096)))

    def no_k(ws):
        return ws.request_with("no-k", pointmap_url=_save_npy(ws, "depth.npy", ws.depth))

    def k_wrong(ws):
        name = _save_npz(ws, "k22.npz", depth=ws.depth, K=np.eye(2))
        return ws.request_with("k22", pointmap_url=name)

    specs = [
        ("depth-size-mismatch-aspect", "depth 100×100 for a 160×120 image",
         variant("aspect", lambda ws: np.full((100, 100), 800, np.uint16)), True, {}),
        ("depth-all-zero", "uint16 depth, every pixel 0",
         variant("zeros", lambda ws: np.zeros_like(ws.depth)), False, {}),
        ("depth-all-nan", "float32 depth, every pixel NaN",
         variant("nan", lambda ws: np.full(ws.depth.shape, np.nan, np.float32)), True, {}),
        ("depth-all-inf", "float32 depth, every pixel +inf",
         variant("inf", lambda ws: np.full(ws.depth.shape, np.inf, np.float32)), False, {}),
        ("depth-all-negative", "float32 depth, every pixel -1 m",
         variant("neg", lambda ws: np.full(ws.depth.shape, -1.0, np.float32)), False, {}),
        ("depth-float-millimetres", "float32 depth in millimetres (median ~700)",
         variant("float-mm", lambda ws: ws.depth.astype(np.float32)), True,
         {}),
        ("depth-int32", "int32 depth",
         variant("int32", lambda ws: ws.depth.astype(np.int32)), False, {}),
        ("pointmap-pickled-npy", "NPY of a pickled object array", pickled, True, {}),
        ("pointmap-raw-pickle", "a Python pickle, not NPY", raw_pickle, False, {}),
        ("pointmap-npz-zip-bomb", f"NPZ of ~0.5 MB whose member inflates to "
         f"{BOMB_MEMBER_BYTES // 2**20} MiB (peak RSS bound {BOMB_RSS_MB:.0f} MB)", bomb, True,
         {"rss": BOMB_RSS_MB}),
        ("pointmap-npy-declares-112gib", "NPY of 192 bytes declaring 100000×100000×3 float32",
         declares(False), True, {}),
        ("pointmap-npz-declares-112gib", "NPZ whose member declares 100000×100000×3 float32",
         declares(True), False, {}),
        ("pointmap-npz-no-depth-key", "NPZ with arrays 'a' and 'b'", no_key, False, {}),
        ("pointmap-two-channels", "H×W×2 float NPY", two_channel, False, {}),
        ("pointmap-8bit-png", "8-bit PNG as depth", png8, False, {}),
        ("pointmap-random-bytes", "4 KiB of random bytes", not_npy, False, {}),
        ("depth-without-intrinsics", "depth NPY with no K anywhere", no_k, False, {}),
        ("pointmap-npz-k-2x2", "NPZ depth with a 2×2 K", k_wrong, False, {}),
    ]
    return [_bad(name, text, "pointmap_url", build, quick, rss_limit_mb=extra.get("rss"),
                 known=extra.get("known", "")) for name, text, build, quick, extra in specs]


def _intrinsics_cases() -> List[Case]:
    def intr(fx, fy, cx=80.0, cy=60.0):
        return {"fx": fx, "fy": fy, "cx": cx, "cy": cy}

    return [
        _bad("intrinsics-zero-focal", "intrinsics fx = fy = 0", "intrinsics",
             lambda ws: ws.request_with("f0", intrinsics=intr(0.0, 0.0)), True),
        _bad("intrinsics-negative-focal", "intrinsics fx = -150", "intrinsics",
             lambda ws: ws.request_with("fneg", intrinsics=intr(-150.0, 150.0)), False),
        _bad("intrinsics-nan", "--intrinsics nan,nan,80,60", "intrinsics",
             lambda ws: ["--request", ws.inp / "good.json", "--intrinsics", "nan,nan,80,60"],
             False),
        _bad("intrinsics-flag-malformed", "--intrinsics 1,2,3", "--intrinsics",
             lambda ws: ["--request", ws.inp / "good.json", "--intrinsics", "1,2,3"], False),
        _bad("K-2x2", "K is a 2×2 matrix", "K",
             lambda ws: ws.request_with("k2", intrinsics=None, K=[[1, 0], [0, 1]]), False),
    ]


def _prompt_cases() -> List[Case]:
    def boxes(name, **change):
        def build(ws):
            box = dict(ws.request["box_prompts"][0], **change)
            return ws.request_with(name, box_prompts=[box])
        return build

    def points(name, **point):
        return lambda ws: ws.request_with(name, box_prompts=None, point_prompts=[point])

    def many_boxes(ws):
        rng = np.random.default_rng(0)
        xy = rng.integers(0, [ws.width - 8, ws.height - 8], size=(10000, 2))
        many = [{"x_min": int(x), "y_min": int(y), "x_max": int(x) + 6, "y_max": int(y) + 6}
                for x, y in xy]
        return ws.request_with("boxes10k", box_prompts=many)

    return [
        _bad("box-out-of-range", "box x_max = width + 10", "box_prompts[0].x_max",
             lambda ws: boxes("box-oob", x_max=ws.width + 10)(ws), True),
        _bad("box-negative", "box x_min = -5", "box_prompts[0].x_min",
             boxes("box-neg", x_min=-5), False),
        _bad("box-inverted", "box x_max < x_min", "box_prompts[0].x_max",
             boxes("box-inv", x_min=50, x_max=10), False),
        _bad("box-not-integer", "box x_min = \"a\"", "box_prompts[0].x_min",
             boxes("box-str", x_min="a"), False),
        _bad("box-missing-key", "box without y_max", "box_prompts[0].y_max",
             lambda ws: ws.request_with("box-key", box_prompts=[{"x_min": 1, "y_min": 1,
                                                                   "x_max": 9}]), False),
        _bad("box-prompts-not-list", "box_prompts is an object", "box_prompts",
             lambda ws: ws.request_with("box-obj", box_prompts={"x_min": 1}), False),
        _bad("point-out-of-range", "point y = height", "point_prompts[0].y",
             lambda ws: points("pt-oob", x=5, y=ws.height)(ws), True),
        _bad("point-label-2", "point label 2", "point_prompts[0].label",
             points("pt-label", x=5, y=5, label=2), False),
        _bad("prompts-only-background", "one point, label 0 (background only)",
             "point_prompts", points("pt-bg", x=5, y=5, label=0), False),
        _bad("boxes-10000", "10,000 box prompts (liveness bound 120 s)", "box_prompts",
             many_boxes, True),
        _bad("seed-out-of-range", "seed 2**40", "seed",
             lambda ws: ws.request_with("seed", seed=2**40), False),
        _bad("prompt-not-string", "prompt is the number 5", "prompt",
             lambda ws: ws.request_with("prompt", box_prompts=None, prompt=5), False),
    ]


def _mask_cases() -> List[Case]:
    def sized(ws, h, w):
        m = np.zeros((h, w), np.uint8)
        m[h // 4: h // 2, w // 4: w // 2] = 255
        return m

    return [
        _bad("mask-wrong-size", "mask 100×100 for a 160×120 image", "mask_urls[0]",
             lambda ws: _mask(ws, "mask-size", sized(ws, 100, 100)), True),
        _bad("mask-empty", "mask with no non-zero pixel", "mask_urls[0]",
             lambda ws: _mask(ws, "mask-empty", np.zeros((ws.height, ws.width), np.uint8)),
             False),
        _bad("mask-not-an-image", "mask file of random bytes", "mask_urls[0]",
             lambda ws: ws.request_with("mask-noise", mask_urls=[
                 _write(ws, "mask.bin", os.urandom(512))]), False),
        _bad("mask-urls-not-list", "mask_urls is a string", "mask_urls",
             lambda ws: ws.request_with("mask-str", mask_urls="mask.png"), False),
    ]


def _request_file_cases() -> List[Case]:
    def raw(name, text):
        def build(ws):
            path = ws.inp / f"{name}.json"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return ["--request", path]
        return build

    return [
        _bad("request-invalid-json", "request file with a JSON syntax error", "--request",
             raw("syntax", '{"image_url": "rgb.png",'), False),
        _bad("request-not-object", "request file holding a JSON list", "--request",
             raw("list", "[1, 2]"), False),
        _bad("request-deeply-nested-json", "request with lists nested 100,000 deep",
             "--request", raw("nested", nested_json(100000)), True),
        _bad("request-not-utf8", "request file in Latin-1 with a non-ASCII byte", "--request",
             raw("latin1", b'{"image_url": "rgb\xe9.png"}'), False),
        _bad("request-missing-file", "--request names a missing file", "--request",
             lambda ws: ["--request", ws.inp / "absent" / "request.json"], False),
        _bad("camera-pose-not-rigid", "camera_pose with a rotation scaled by 2", "camera_pose",
             lambda ws: ws.request_with("pose", camera_pose=np.diag([2.0, 2, 2, 1]).tolist()),
             False),
    ]


def _output_cases() -> List[Case]:
    good = ["--request", "{good}"]

    def parent_is_file(ws):
        blocker = ws.out / "blocker"
        blocker.write_text("a file, not a directory")
        return check_bad(ws, "output-parent-is-file", _args(ws, good), "--output",
                         output=blocker / "run", fresh_next=True)

    def nonempty(ws):
        out = ws.out / "nonempty"
        out.mkdir(exist_ok=True)
        (out / "keep.txt").write_text("user data")
        return check_bad(ws, "output-nonempty-dir", _args(ws, good), "--output", output=out,
                         fresh_next=True)

    def is_file(ws):
        out = ws.out / "a-file"
        out.write_text("user data")
        return check_bad(ws, "output-is-a-file", _args(ws, good), "--output", output=out,
                         fresh_next=True)

    def symlink_empty(ws):
        target = ws.out / "empty-target"
        target.mkdir(exist_ok=True)
        link = ws.fresh_output("output-symlink-empty")
        link.symlink_to(target)
        return check_bad(ws, "output-symlink-empty", _args(ws, good), "--output", output=link,
                         fresh_next=True, accept_success=True)

    def symlink_nonempty(ws):
        target = ws.out / "full-target"
        target.mkdir(exist_ok=True)
        (target / "keep.txt").write_text("user data")
        link = ws.fresh_output("output-symlink-full")
        link.symlink_to(target)
        return check_bad(ws, "output-symlink-nonempty", _args(ws, good), "--output",
                         output=link, fresh_next=True)

    return [
        Case("cli", "output-parent-is-file", "--output under a path that is a file", "--output",
             parent_is_file, quick=True),
        Case("cli", "output-nonempty-dir", "--output is a non-empty directory (left as it was)",
             "--output", nonempty),
        Case("cli", "output-is-a-file", "--output is an existing file (left as it was)",
             "--output", is_file),
        Case("cli", "output-symlink-to-empty-dir", "--output is a symlink to an empty "
             "directory: written through it, or refused before computing", "--output",
             symlink_empty),
        Case("cli", "output-symlink-to-nonempty-dir", "--output is a symlink to a non-empty "
             "directory (left as it was)", "--output", symlink_nonempty),
    ]


def _signal_cases() -> List[Case]:
    return [
        Case("cli", "sigint-during-export", "SIGINT while the run directory is being written "
             "(640×480 example)", "", lambda ws: during_export(ws, "sigint", signal.SIGINT)),
        Case("cli", "sigterm-during-export", "SIGTERM while the run directory is being written "
             "(640×480 example): exit 143 'terminated', nothing left", "",
             lambda ws: during_export(ws, "sigterm", signal.SIGTERM), quick=True),
        Case("cli", "sigkill-during-export", "SIGKILL while the run directory is being written; "
             "the next run in the same parent removes the stale temp dir", "",
             lambda ws: during_export(ws, "sigkill", signal.SIGKILL), quick=True),
    ]


def _args(ws: CliWorkspace, template: Sequence[str]) -> List[str]:
    return [a.replace("{good}", str(ws.inp / "good.json")) for a in template]


def _bad(name: str, text: str, field: str, build: Callable[[CliWorkspace], List[Any]],
         quick: bool, known: str = "", rss_limit_mb: Optional[float] = None,
         timeout_s: Optional[float] = None) -> Case:
    def run(ws: CliWorkspace) -> Outcome:
        return check_bad(ws, name, build(ws), field, rss_limit_mb=rss_limit_mb,
                         timeout_s=timeout_s)

    return Case("cli", name, text, field, run, quick=quick, known=known)


def cli_cases() -> List[Case]:
    """Every CLI case, in table order."""
    return (_image_cases() + _pointmap_cases() + _intrinsics_cases() + _prompt_cases()
            + _mask_cases() + _request_file_cases() + _output_cases() + _signal_cases())
