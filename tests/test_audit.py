"""The audit runner and its CLI: suites end to end, gates and exit codes, fault isolation, resume,
reproducibility records, determinism, configuration files, budgets and the demo."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import reports
from robust.audit import SUITES, AuditConfig, exit_code, load_config, plan_suites, run_audit
from robust.cli import cli
from robust.errors import InputError
from robust.models import build_classifier, save_classifier

DATA = "synthetic:test_iid,size=16"
TINY = ["clean", "shift,n=24,sweep=obj_hue,sweep_n=8,steps=3"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    from robust.synthetic import CLASS_NAMES

    clf = build_classifier("smallcnn", 10, (3, 16, 16), class_names=list(CLASS_NAMES), width=4)
    path = tmp_path_factory.mktemp("model") / "clf"
    save_classifier(clf, path)
    return str(path)


@pytest.fixture(scope="module")
def full_audit(model_path: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("audit")
    suites = [*TINY, "pgd:linf@4/255,steps=2,n=12", "transforms:brightness,n=12,sweep_steps=3"]
    result = run_audit(model_path, DATA, AuditConfig(suites, gates=["clean.acc>=0", "pgd.linf_4.acc<=1", "shift.test_shift.acc>=2"],
                                                     out=out, max_samples=24, progress=False))
    return result, out


def test_audit_runs_every_suite_and_writes_valid_reports(full_audit) -> None:
    result, out = full_audit
    assert [s.name for s in result.suites] == ["clean", "shift", "pgd", "transforms"]
    assert all(s.status == "ok" for s in result.suites), [(s.name, s.error) for s in result.suites]
    for path in ("clean.acc", "clean.ece", "shift.test_shift.acc", "shift.follow_obj_hue", "shift.sweep_obj_hue.range",
                 "pgd.linf_4.acc", "pgd.linf_1.acc", "transforms.brightness.acc", "transforms.mean_worst_acc"):
        assert path in result.metrics(), path
    assert 0.0 <= result.metric("pgd.linf_4.acc") <= result.metric("pgd.clean_acc") + 1e-9
    for name in ("report.json", "index.html", "report.md", "junit.xml"):
        assert (out / name).is_file()
    data = reports.read_report_data(out, validate=True)
    assert data["complete"] is True and data["passed"] is False


def test_audit_records_what_reproduces_it(full_audit, model_path: str) -> None:
    result, _ = full_audit
    from robust.data import load_dataset
    from robust.models import load_classifier

    assert result.model["fingerprint"] == load_classifier(model_path).fingerprint()
    assert result.data["fingerprint"] == load_dataset(DATA, n=24, seed=0).fingerprint()
    env = result.environment
    assert env["seed"] == 0 and env["device"] == "cpu" and env["packages"]["torch"] and env["python"]
    assert env["command"] and env["suites"][0] == "clean" and env["robust"]
    assert result.suite("pgd").params["spec"] == "pgd:linf@4/255,steps=2,n=12"


def test_gates_are_evaluated_on_the_measured_metrics(full_audit) -> None:
    result, _ = full_audit
    assert [g.passed for g in result.gates] == [True, True, False]
    assert exit_code(result) == 1


def test_same_seed_gives_the_same_report(model_path: str, tmp_path: Path) -> None:
    def run(out: Path) -> dict:
        run_audit(model_path, DATA, AuditConfig(TINY, out=out, max_samples=24, seed=3, progress=False, formats=["json"]))
        data = json.loads((out / "report.json").read_text())
        data.pop("created")
        data["environment"].pop("duration_s")
        for suite in data["suites"]:
            suite.pop("duration_s")
        return data

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first == second
    images = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert images and all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in images)


def test_an_erroring_suite_is_reported_and_the_others_run(model_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attacks

    def exploding_search(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the search exploded")

    # A spec error is refused before any suite runs (test_suite_specs_are_checked_before_any_suite_runs);
    # a suite that fails while running is reported, and the others still run.
    monkeypatch.setattr(attacks, "transform_search", exploding_search)
    result = run_audit(model_path, DATA, AuditConfig(["clean", "transforms:rotation", "shift,n=12,sweep=none"], out=tmp_path,
                                                     max_samples=12, progress=False, gates=["transforms.mean_worst_acc>=0"]))
    status = {s.name: s.status for s in result.suites}
    assert status == {"clean": "ok", "transforms": "error", "shift": "ok"}
    broken = result.suite("transforms")
    assert "the search exploded" in broken.error and "Traceback" in broken.details["traceback"]
    assert not result.gates[0].passed and "errored" in result.gates[0].message
    assert exit_code(result) == 1 and exit_code(result.__class__(suites=result.suites)) == 3
    assert exit_code(result.__class__(suites=result.suites), allow_errors=True) == 0


def test_interrupted_audit_keeps_finished_suites_and_resume_skips_them(model_path: str, tmp_path: Path) -> None:
    def stop_after_clean(suite) -> None:
        if suite.name == "clean":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_audit(model_path, DATA, AuditConfig(TINY, out=tmp_path, max_samples=24, progress=False), on_suite=stop_after_clean)
    partial = reports.load_report(tmp_path)
    assert not partial.complete and [s.name for s in partial.suites] == ["clean"]
    before = partial.suite("clean")

    finished = run_audit(model_path, DATA, AuditConfig(TINY, out=tmp_path, max_samples=24, progress=False, resume=True))
    assert finished.complete and [s.name for s in finished.suites] == ["clean", "shift"]
    assert finished.environment["resumed"] == ["clean"]
    assert finished.suite("clean").duration_s == before.duration_s  # kept, not measured again
    assert finished.suite("clean").metrics == before.metrics
    with pytest.raises(InputError, match="resume"):
        run_audit(model_path, DATA, AuditConfig(TINY, out=tmp_path, max_samples=24, seed=1, progress=False, resume=True))


def test_time_budget_skips_suites_that_did_not_start(model_path: str) -> None:
    result = run_audit(model_path, DATA, AuditConfig(["clean"], max_samples=12, time_budget=1e-9, gates=["clean.acc>=0"], progress=False))
    assert result.suite("clean").status == "skipped" and "time budget" in result.suite("clean").error
    assert not result.passed


def test_shift_skips_itself_without_synthetic_data(model_path: str, tmp_path: Path) -> None:
    from robust.synthetic import SyntheticBenchmark

    SyntheticBenchmark(size=16).split("test_iid", 20).save_npz(tmp_path / "plain.npz")
    result = run_audit(model_path, str(tmp_path / "plain.npz"), AuditConfig(["clean", "shift"], progress=False))
    assert result.suite("shift").status == "skipped" and "synthetic" in result.suite("shift").error
    assert exit_code(result) == 0


def test_audit_config_checks_its_settings_where_they_are_made() -> None:
    with pytest.raises(InputError, match="max_samples"):
        AuditConfig(max_samples=0)
    with pytest.raises(InputError, match="time_budget"):
        AuditConfig(time_budget=float("inf"))
    with pytest.raises(InputError, match="resume"):
        AuditConfig(resume=True)
    config = AuditConfig(iter(["clean"]), gates=iter(["clean.acc>=0"]), formats=("json",))
    assert (config.suites, config.gates, config.formats, config.model_options) == (["clean"], ["clean.acc>=0"], ["json"], {})


def test_suite_plans_check_names_and_duplicates() -> None:
    planned = plan_suites(["pgd:linf@8/255", "pgd:l2@0.5,name=pgd_l2"])
    assert [p.name for p in planned] == ["pgd", "pgd_l2"] and "name" not in planned[1].spec.options
    with pytest.raises(InputError, match="suite"):
        plan_suites(["no_such_suite"])
    with pytest.raises(InputError, match="distinct"):
        plan_suites(["clean", "clean"])
    assert "clean" in SUITES and "corruptions" in SUITES and "pgd" in SUITES


def test_models_given_as_module_paths_and_onnx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_path: str) -> None:
    (tmp_path / "robust_test_models.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run_audit("robust_test_models:make", DATA, AuditConfig(["clean"], max_samples=12, progress=False))
    assert result.suite("clean").status == "ok" and result.model["input_size"] == [3, 16, 16]

    from robust.models import export_onnx, load_classifier

    export_onnx(load_classifier(model_path), tmp_path / "clf.onnx")
    onnx_result = run_audit(str(tmp_path / "clf.onnx"), DATA, AuditConfig(["clean", "pgd:linf@4/255,steps=1"], max_samples=12, progress=False))
    assert onnx_result.suite("clean").status == "ok"
    assert onnx_result.suite("pgd").status == "skipped" and "square" in onnx_result.suite("pgd").error


# -- command line ---------------------------------------------------------------------------------

def _audit(args: list[str]):
    return CliRunner().invoke(cli, ["audit", "-q", *args])


def test_cli_exit_codes_follow_gates_and_errors(model_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attacks

    base = ["-m", model_path, "-d", DATA, "-n", "12", "-s", "clean", "--format", "json,junit"]
    ok = _audit([*base, "--gate", "clean.acc>=0", "-o", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert "PASS clean.acc>=0" in ok.output and "clean" in ok.output
    failed = _audit([*base, "--gate", "clean.acc>=1.5", "-o", str(tmp_path / "fail")])
    assert failed.exit_code == 1 and "FAIL clean.acc>=1.5" in failed.output
    assert (tmp_path / "fail" / "junit.xml").is_file() and not (tmp_path / "fail" / "index.html").exists()
    bad_gate = _audit([*base, "--gate", "clean.acc>>1", "-o", str(tmp_path / "bad")])
    assert bad_gate.exit_code == 2 and "gate" in bad_gate.output
    unknown = _audit([*base, "--gate", "pgd.acc>=0", "-o", str(tmp_path / "bad")])
    assert unknown.exit_code == 2 and "pgd" in unknown.output
    refused = _audit([*base, "-s", "transforms:nope", "-o", str(tmp_path / "err")])
    assert refused.exit_code == 2 and "transforms:nope" in refused.output and not (tmp_path / "err" / "report.json").exists()

    def exploding_search(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the search exploded")

    monkeypatch.setattr(attacks, "transform_search", exploding_search)
    errored = _audit([*base, "-s", "transforms:rotation", "-o", str(tmp_path / "err")])
    assert errored.exit_code == 3 and "transforms" in errored.output
    allowed = _audit([*base, "-s", "transforms:rotation", "--allow-errors", "-o", str(tmp_path / "err")])
    assert allowed.exit_code == 0
    missing = CliRunner().invoke(cli, ["audit", "-d", DATA])
    assert missing.exit_code == 2 and "--model" in missing.output


def test_config_file_holds_the_same_settings(model_path: str, tmp_path: Path) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(
        f'model = "{model_path}"\n'
        f'data = "{DATA}"\n'
        'suites = ["clean"]\n'
        'gates = ["clean.acc>=1.5"]\n'
        'out = "result"\n'
        'max_samples = 12\n'
        'formats = ["json", "md"]\n')
    loaded = load_config(config)
    assert loaded["out"] == str(tmp_path / "result") and loaded["suites"] == ["clean"]
    failing = _audit(["-c", str(config)])
    assert failing.exit_code == 1 and (tmp_path / "result" / "report.md").is_file()
    overridden = _audit(["-c", str(config), "--gate", "clean.acc>=0"])
    assert overridden.exit_code == 0, overridden.output
    # A checkpoint named by its prefix, relative to the file, is found from any working directory.
    import shutil

    (tmp_path / "models").mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(model_path + suffix, tmp_path / "models" / ("clf" + suffix))
    (tmp_path / "prefix.toml").write_text('model = "models/clf"\n')
    assert load_config(tmp_path / "prefix.toml")["model"] == str(tmp_path / "models" / "clf")
    (tmp_path / "bad.toml").write_text('model = "x"\nsuites = "clean"\ncolour = 1\n')
    with pytest.raises(InputError, match="colour"):
        load_config(tmp_path / "bad.toml")


def test_demo_quick_runs_the_whole_job(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(tmp_path / "demo")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "shortcut:" in result.output and "index.html" in result.output
    data = reports.read_report_data(tmp_path / "demo")
    assert [s["name"] for s in data["suites"]][:5] == ["clean", "shift", "corruptions", "pgd", "transforms"]
    assert (tmp_path / "demo" / "classifier.safetensors").is_file()
    clean = next(s for s in data["suites"] if s["name"] == "clean")
    # The smoke run still trains a classifier a user can learn from, clearly better than chance (0.1).
    assert clean["metrics"]["acc"] >= 0.6
