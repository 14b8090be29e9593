"""A user's own folder from start to finish, as issue #22 tried it: mixed sizes and colour modes from the
command line, progress in logs, specs checked before work starts, a one-line error for every bad input."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from robust.cli import cli
from robust.data import load_dataset
from robust.models import build_classifier, save_classifier

SIZES = ((12, 12), (16, 20), (20, 16), (14, 14), (24, 24))  # (height, width)
MODES = ("RGB", "RGBA", "L")
CLASSES = ("circle", "square", "triangle")


def _draw(cls: str, mode: str, height: int, width: int) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new(mode, (width, height), 255 if mode == "L" else (255, 255, 255, 255)[: len(mode)])
    draw = ImageDraw.Draw(image)
    box = (width * 0.2, height * 0.2, width * 0.8, height * 0.8)
    ink = 40 if mode == "L" else (200, 30, 30, 255)[: len(mode)]
    if cls == "circle":
        draw.ellipse(box, fill=ink)
    elif cls == "square":
        draw.rectangle(box, fill=ink)
    else:
        draw.polygon([(width / 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=ink)
    return image


def write_folder(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = 10, sizes: tuple[tuple[int, int], ...] = SIZES) -> Path:
    """``root/<class>/*.png|jpg``: RGB, RGBA and greyscale images in every size of ``sizes``."""
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            height, width = sizes[i % len(sizes)]
            mode = MODES[i % len(MODES)]
            suffix = ".jpg" if mode != "RGBA" and i % 4 == 0 else ".png"
            _draw(cls, mode, height, width).save(root / cls / f"{i}{suffix}")
    return root


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def one_error_line(result: Result, *names: str) -> str:
    """Exit 2 and exactly one ``error:`` line on stderr, naming each of ``names``; returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("user") / "shapes")


@pytest.fixture(scope="module")
def model16(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 3-class 16x16 checkpoint for the shapes folder."""
    clf = build_classifier("smallcnn", 3, (3, 16, 16), class_names=list(CLASSES), width=4, seed=0)
    path = tmp_path_factory.mktemp("model") / "clf"
    save_classifier(clf, path)
    return str(path)


# -- 1. data specs take options everywhere ---------------------------------------------------------

def test_data_info_reports_the_sizes_of_a_mixed_folder_and_suggests_a_size(shapes: Path):
    found = run("data", "info", str(shapes))
    assert found.exit_code == 0, found.output
    assert "30 image files in 3 classes" in found.output
    assert "5 sizes: 12x12 (6), 16x20 (6), 20x16 (6), 14x14 (6), 24x24 (6)" in found.output
    assert "colour modes: " in found.output and "RGBA (" in found.output and "L (" in found.output
    assert f"'{shapes},size=12'" in found.output

    resized = run("data", "info", f"{shapes},size=16")
    assert resized.exit_code == 0, resized.output
    assert "30 images, shape 3x16x16" in resized.output
    assert "preprocessing: 30 of 30 images resized to 16x16 keeping their aspect ratio (12 centre-cropped" in resized.output


def test_a_mixed_folder_without_a_size_is_one_line_naming_the_fix(shapes: Path, tmp_path: Path):
    line = one_error_line(run("train", "--data", str(shapes), "--epochs", "1", "--out", str(tmp_path / "run")), str(shapes))
    assert "5 sizes" in line and ",size=" in line


def test_every_kind_of_data_spec_takes_a_size(shapes: Path, tmp_path: Path):
    folder = load_dataset(f"{shapes},size=10x14,channels=1")
    assert folder.images.shape == (30, 1, 10, 14) and folder.class_names == list(CLASSES)
    load_dataset("digits:test,size=9", n=10).save_npz(tmp_path / "d.npz")
    npz = load_dataset(f"{tmp_path / 'd.npz'},size=12")
    assert npz.images.shape == (10, 1, 12, 12) and "resized to 12x12" in npz.preprocessing
    assert load_dataset("synthetic:test_iid,size=16,strength=0.5", n=4).images.shape == (4, 3, 16, 16)
    info = run("data", "info", "digits,size=8", "--split", "test")
    assert info.exit_code == 0 and "shape 1x8x8" in info.output
    one_error_line(run("data", "info", f"{shapes},sise=3"), "sise", "size")
    one_error_line(run("data", "info", f"{shapes},size=0"), "size")
    one_error_line(run("data", "info", "digits,size=abc"), "size")


def test_photos_turned_by_their_exif_orientation_load_upright(tmp_path: Path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    photo = Image.new("RGB", (20, 10), (255, 0, 0))  # stored 20 wide, 10 high, shown turned by 90 degrees
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "a" / "0.jpg", exif=exif.tobytes())
    Image.new("RGB", (10, 20)).save(tmp_path / "b" / "0.png")
    assert load_dataset(tmp_path).images.shape == (2, 3, 20, 10)


def test_resizing_keeps_the_aspect_ratio_by_a_centre_crop():
    from robust.imageset import fit_images

    wide = torch.zeros(1, 3, 8, 16)
    wide[..., :4] = 1.0  # white left quarter
    wide[..., 12:] = 1.0  # white right quarter
    square = fit_images(wide, (8, 8))
    assert square.shape == (1, 3, 8, 8) and float(square.max()) == 0.0  # the black middle, nothing stretched
    assert fit_images(torch.rand(2, 1, 10, 10), (5, 5)).shape == (2, 1, 5, 5)


# -- 2. progress that works in logs ----------------------------------------------------------------

def test_progress_lines_off_a_terminal_are_rate_limited_and_say_done_of_total():
    from robust.progress import LogProgress

    now = [0.0]
    stream = io.StringIO()
    bar = LogProgress(total=1000, desc="train erm", unit="steps", interval=10.0, stream=stream, clock=lambda: now[0])
    for _ in range(1000):  # 100 s of work, 0.1 s a step
        now[0] += 0.1
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    # One line a tenth of the work (each 10 s apart here), none at 100% but the closing one.
    assert 9 <= len(lines) <= 11, lines
    assert all(line.startswith("train erm: ") for line in lines)
    assert "100/1000 steps (10%)" in lines[0] and "about 1m30s left" in lines[0]
    assert lines[-1] == "train erm: 1000 steps done in 1m40s"

    fast, stream = [0.0], io.StringIO()
    burst = LogProgress(total=1000, interval=10.0, stream=stream, clock=lambda: fast[0])
    for _ in range(1000):  # a tenth of the work every 0.1 s: lines at most every interval / 10
        fast[0] += 0.001
        burst.update(1)
    assert stream.getvalue() == ""


def test_progress_is_a_bar_on_a_terminal_and_nothing_when_disabled(monkeypatch: pytest.MonkeyPatch):
    import sys

    from robust.progress import LogProgress, NoProgress, progress

    assert type(progress(total=3)) is LogProgress  # pytest's stderr is no terminal
    assert type(progress(total=3, enabled=False)) is NoProgress
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(range(4), desc="suite", enabled=None)
    assert type(bar).__module__.startswith("tqdm")
    assert list(bar) == [0, 1, 2, 3] and bar.n == 4  # advanced with every item
    assert type(progress(total=3, enabled=False)) is NoProgress


def test_train_and_audit_write_progress_lines_in_logs_and_nothing_when_quiet(shapes: Path, model16: str, tmp_path: Path):
    env = {"ROBUST_PROGRESS_INTERVAL": "0"}
    data = f"{shapes},size=16"
    trained = run("train", "--data", data, "--epochs", "2", "--batch-size", "10", "--out", str(tmp_path / "run"), env=env)
    assert trained.exit_code == 0, trained.output
    lines = [line for line in trained.stderr.splitlines() if line.startswith("train erm: ")]
    assert "train erm: 1/6 steps (17%)" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("train erm: 6 steps done in")
    assert "run folder" in trained.stdout and "best.safetensors" not in trained.stdout  # no evaluation set: no best

    quiet = run("train", "--data", data, "--epochs", "2", "--batch-size", "10", "--quiet", "--out", str(tmp_path / "quiet"), env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""

    audited = run("audit", "-m", model16, "-d", data, "-s", "corruptions,names=fog+snow,severities=2", "-o", str(tmp_path / "audit"), env=env)
    assert audited.exit_code == 0, audited.output
    assert "corruptions: 1/2 (50%)" in audited.stderr and "corruptions: 2 done in" in audited.stderr
    silent = run("audit", "-q", "-m", model16, "-d", data, "-s", "corruptions,names=fog+snow,severities=2", "-o", str(tmp_path / "q"), env=env)
    assert silent.exit_code == 0 and silent.stderr == ""


# -- 3. every spec is checked before any work starts -----------------------------------------------

@pytest.mark.parametrize("bad", [
    ["-s", "corruptions:fog@9", "-s", "pgd:linf@abc"],
    ["-s", "pgd:linf@abc"],
    ["-s", "pgd:linf@-1"],
    ["-s", "pgd:linf@8/255,stepz=3"],
    ["-s", "corruptions,severites=3"],
    ["-s", "transforms:rotations"],
    ["--gate", "clean.acc>>1"],
])
def test_a_bad_suite_or_gate_spec_fails_before_the_first_suite_runs(bad: list[str], model16: str, shapes: Path, tmp_path: Path):
    out = tmp_path / "audit"
    result = run("audit", "-m", model16, "-d", f"{shapes},size=16", "-s", "clean", *bad, "-o", str(out))
    one_error_line(result, bad[1].split(",")[0] if bad[0] == "-s" else "gate")
    assert not (out / "report.json").exists()  # not even the clean suite ran


def test_train_and_attack_check_their_specs_before_loading_anything(tmp_path: Path):
    missing = str(tmp_path / "not-there")  # any data loading would fail with another message
    one_error_line(run("train", "--data", missing, "--recipe", "pgd:linf@abc", "--out", str(tmp_path / "r")), "eps")
    one_error_line(run("train", "--data", missing, "--recipe", "corrupt:fog@9", "--out", str(tmp_path / "r")), "corrupt")
    one_error_line(run("train", "--data", missing, "--suite", "corruptions@9", "--out", str(tmp_path / "r")), "corruptions@9")
    one_error_line(run("train", "--data", missing, "--suite", "pgd:linf@8/255,stepz=3", "--out", str(tmp_path / "r")), "stepz")
    one_error_line(run("attack", "--model", missing, "--data", missing, "--attack", "pgd:linf@abc", "--out", str(tmp_path / "a")), "eps")
    one_error_line(run("attack", "--model", missing, "--data", missing, "--eps-grid", "0,2/255,-1", "--out", str(tmp_path / "a")),
                   "--eps-grid")


# -- 4. clean errors for every bad input -------------------------------------------------------------

def test_a_checkpoint_whose_config_disagrees_with_its_weights_names_both_values(model16: str, shapes: Path, tmp_path: Path):
    for key, value, words in (("num_classes", 5, ("num_classes is 5", "the weights have 3")),
                              ("input_size", [1, 16, 16], ("has 1 channels", "the weights take 3"))):
        bad = tmp_path / key / "clf"
        bad.parent.mkdir()
        shutil.copy(model16 + ".safetensors", bad.with_suffix(".safetensors"))
        config = json.loads(Path(model16 + ".json").read_text())
        config[key] = value
        config["class_names"] = [str(i) for i in range(config["num_classes"])]
        bad.with_suffix(".json").write_text(json.dumps(config))
        one_error_line(run("audit", "-m", str(bad), "-d", f"{shapes},size=16", "-s", "clean", "-o", str(tmp_path / "a")), "clf.json", *words)


def test_npz_files_of_strings_or_garbage_are_one_line_errors(tmp_path: Path):
    np.savez(tmp_path / "strings.npz", images=np.array([["a", "b"]] * 4), labels=np.array([0, 1, 0, 1]))
    one_error_line(run("data", "info", str(tmp_path / "strings.npz")), "strings.npz", "numeric images")
    (tmp_path / "garbage.npz").write_bytes(b"not an archive at all" * 8)
    line = one_error_line(run("data", "info", str(tmp_path / "garbage.npz")), "garbage.npz", "not a zip archive")
    assert "pickle" not in line
    np.savez(tmp_path / "names.npz", images=np.zeros((2, 3, 4, 4), np.uint8), labels=np.array(["cat", "dog"]))
    one_error_line(run("data", "info", str(tmp_path / "names.npz")), "names.npz", "integer labels")


def test_output_folders_that_cannot_be_written_are_refused_before_the_work(model16: str, shapes: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = f"{shapes},size=16"
    one_error_line(run("audit", "-m", model16, "-d", data, "-s", "clean", "-o", str(blocker / "audit")), "out", "a-file")
    one_error_line(run("train", "--data", data, "--out", str(blocker / "run")), "--out")
    one_error_line(run("attack", "--model", model16, "--data", data, "--out", str(blocker / "att")), "--out")
    one_error_line(run("corrupt", data, "--corruptions", "fog", "--severities", "1", "--out", str(blocker / "c")), "--out")
    done = run("audit", "-q", "-m", model16, "-d", data, "-s", "clean", "-n", "6", "-o", str(tmp_path / "audit"))
    assert done.exit_code == 0, done.output
    one_error_line(run("report", "render", str(tmp_path / "audit"), "-o", str(blocker / "r")), "--out")
    assert not (tmp_path / "run").exists()


def test_a_folder_with_one_class_is_refused_for_training(tmp_path: Path):
    write_folder(tmp_path / "one", classes=("circle",), per_class=4, sizes=((12, 12),))
    one_error_line(run("train", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "run")), "training data", "at least 2 classes")
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_a_model_is_refused_data_of_another_size_unless_the_spec_resizes_it(model16: str, shapes: Path, tmp_path: Path):
    line = one_error_line(run("audit", "-m", model16, "-d", f"{shapes},size=24", "-s", "clean", "-o", str(tmp_path / "a")),
                          "3x16x16", "3x24x24")
    assert ",size=16" in line
    resized = run("audit", "-q", "-m", model16, "-d", f"{shapes},size=16", "-s", "clean", "-o", str(tmp_path / "b"))
    assert resized.exit_code == 0, resized.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "resized to 16x16 keeping their aspect ratio" in report["data"]["preprocessing"]


# -- 5. short reprs, rounded labels, --threads everywhere --------------------------------------------

def test_image_sets_and_drawn_batches_print_short(shapes: Path):
    from hypothesis import find
    from hypothesis.vendor.pretty import pretty  # how hypothesis prints a falsifying example's arguments

    import robust.strategies as rs

    data = load_dataset(f"{shapes},size=16")
    assert repr(data) == pretty(data) == "ImageSet('shapes', 30 images 3x16x16, 3 classes: circle, square, triangle)"
    batch = find(rs.batches(data, max_size=4), lambda b: len(b) >= 2)
    assert pretty(batch) == repr(batch) == f"Batch(source='shapes', indices={batch.indices!r})"
    case = find(rs.transform_params("rotation", max_severity=1), lambda c: c.values["angle"] != 0)
    assert pretty(case) == "transform_case('rotation', angle=0.009)"


def test_numbers_in_labels_are_rounded():
    from reports.html import fmt
    from robust.registry import format_number
    from robust.transforms import get_transform, load_builtin_transforms

    load_builtin_transforms()
    brightness = get_transform("brightness")
    assert brightness.describe({"delta": torch.tensor([-1.4901161e-08])}) == "brightness(delta=0)"
    assert brightness.describe({"delta": torch.tensor([0.33333334])}) == "brightness(delta=0.3333)"
    assert get_transform("rotation").describe({"angle": torch.tensor([1e-5])}) == "rotation(angle=0)"
    assert fmt(-1.49e-08) == "0" and fmt(0.87654321) == "0.8765" and fmt(-0.0) == "0"
    assert format_number(0.000123, 3) == "0.000123" and format_number(2e-7, scale=0.1) == "2e-07" and format_number(2e-8, scale=0.1) == "0"


@pytest.mark.parametrize("command", [["train"], ["attack"], ["corrupt"], ["search"], ["audit"], ["demo"], ["gan", "train"],
                                     ["invert"], ["directions"]])
def test_long_running_commands_take_threads(command: list[str]):
    shown = run(*command, "--help")
    assert shown.exit_code == 0 and "--threads" in shown.output


def test_threads_are_set_as_the_option_is_read(shapes: Path, tmp_path: Path):
    before = torch.get_num_threads()
    try:
        result = run("corrupt", f"{shapes},size=12", "--corruptions", "fog", "--severities", "1", "-n", "3", "--threads", "2",
                     "--quiet", "--out", str(tmp_path / "c"))
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2 and result.stderr == ""
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["train", "audit", "demo", "attack", "corrupt", "search"])
def test_long_running_commands_take_quiet(command: str):
    shown = run(command, "--help")
    assert shown.exit_code == 0 and "--quiet" in shown.output


def test_a_config_file_reads_a_data_spec_with_options_from_its_own_folder(model16: str, shapes: Path, tmp_path: Path):
    from robust.audit import load_config

    config = shapes.parent / "audit.toml"
    config.write_text(f'model = "{model16}"\ndata = "shapes,size=16"\nsuites = ["clean"]\nout = "audit"\n')
    assert load_config(config)["data"] == f"{shapes},size=16"
    result = run("audit", "-q", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads((shapes.parent / "audit" / "report.json").read_text())["data"]["n"] == 30
