"""Configuration: defaults, params files, overrides, and the errors promised for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from folk.cli import main
from folk.config import json_schema, json_schema_yaml, load_config
from folk.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_resolve_variant_into_method():
    cfg = load_config(None, ["pretrain.variant=mfm"])
    assert cfg["method"] == {
        "filter": "mfm",
        "num_views": 1,
        "reconstruction": True,
        "distillation": False,
        "p_com": 0.5,
    }
    cfg = load_config(None, ["pretrain.variant=folk_com_only"])
    assert cfg["method"]["p_com"] == 1.0


def test_explicit_method_key_beats_variant():
    cfg = load_config(None, ["pretrain.variant=folk", "method.filter=random_frequency"])
    assert cfg["method"]["filter"] == "random_frequency"
    assert cfg["method"]["distillation"] is True


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, {"pretrain": {"epochs": 7, "base_lr": 1e-3}})
    cfg = load_config(path, ["pretrain.epochs=9", "filter.portions=[0.1, 0.2]"])
    assert cfg["pretrain"]["epochs"] == 9
    assert cfg["pretrain"]["base_lr"] == 1e-3
    assert cfg["filter"]["portions"] == [0.1, 0.2]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"pretrain": {"lrr": 1}}, "unknown key 'pretrain.lrr'"),
        ({"pretrian": {"lr": 1}}, "unknown key 'pretrian'"),
        ({"pretrain": {"epochs": "ten"}}, "key 'pretrain.epochs' must be an integer"),
        ({"pretrain": {"epochs": 1.5}}, "key 'pretrain.epochs' must be an integer"),
        (
            {"model": {"head_norm_last_layer": "yes"}},
            "key 'model.head_norm_last_layer' must be a boolean",
        ),
        ({"filter": {"portions": [0.01, 1.5]}}, "key 'filter.portions'"),
        ({"filter": {"portions": [0.0]}}, "must be > 0"),
        ({"filter": {"portions": []}}, "at least 1"),
        ({"filter": {"p_com": 1.2}}, "key 'filter.p_com'"),
        ({"filter": {"mfm_radius": 200}}, "larger than the image"),
        ({"model": {"img_size": 30, "patch_size": 4}}, "does not divide"),
        ({"pretrain": {"variant": "fold"}}, "key 'pretrain.variant'"),
        ({"pretrain": {"amp": "int8"}}, "key 'pretrain.amp'"),
        ({"workflow": {"variants": ["folk", "nope"]}}, "unknown variant 'nope'"),
        ({"pretrain": "fast"}, "key 'pretrain' must be a mapping"),
    ],
)
def test_bad_params_name_file_and_key(tmp_path, data, needle):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'pretrain.base_lr'"):
        load_config(write(tmp_path, {"pretrain": {"base_lrr": 1e-3}}))


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"--set pretrain.epochs: key 'pretrain.epochs'"):
        load_config(None, ["pretrain.epochs=-1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["pretrain.epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/params.yaml")


def test_cli_reports_config_error_without_traceback(tmp_path, capsys):
    path = write(tmp_path, {"filter": {"portions": [2.0]}})
    assert main(["pretrain", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "filter.portions" in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # rejected before anything was created


def test_committed_schema_is_generated_from_defaults():
    committed = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert committed == json_schema_yaml(), "run `folk schema` to regenerate"


def test_folk_schema_markdown_writes_the_reference_and_checks_a_copy(tmp_path, capsys):
    from folk.config import markdown_reference_text

    text = markdown_reference_text()
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == text  # without --out: standard output
    copy = tmp_path / "configuration.md"
    assert main(["schema", "--markdown", "--out", str(copy)]) == 0
    assert copy.read_text() == text
    assert main(["schema", "--markdown", "--out", str(copy), "--check"]) == 0
    copy.write_text(text.replace("| `pretrain.epochs` |", "| `pretrain.epoch` |"))
    assert main(["schema", "--markdown", "--out", str(copy), "--check"]) == 2
    assert "folk schema --markdown --out" in capsys.readouterr().err
    assert main(["schema", "--markdown", "--check"]) == 2  # nothing to compare with
    # one row per key, each with the key's description from defaults.yaml's comment
    row = next(line for line in text.splitlines() if line.startswith("| `pretrain.lambda_kd` |"))
    assert row.endswith("| weight of the distillation loss |") and "`1.0`" in row


def test_schema_rejects_what_folk_rejects():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.validate(load_config(None), schema)
    bad = load_config(None)
    bad["filter"]["portions"] = [1.5]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = load_config(None)
    bad["pretrain"]["unknown"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cli_starts_without_importing_torch():
    code = (
        "import sys; from folk.cli import main; main(['config', '--config', sys.argv[1]]); "
        "print('torch' in sys.modules)"
    )
    params = REPO / "folk" / "config" / "defaults.yaml"
    out = (
        subprocess.run(
            [sys.executable, "-c", code, str(params)], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()
    )
    assert out[-1] == "False"


# ---------------------------------------------------------------- ConfigError's key and source


def test_a_wrong_type_in_a_file_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, {"data": {"mean": [0.5, "grey", 0.5]}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: key 'data.mean[1]' must be a number, got 'grey' (str)"
    assert (err.value.key, err.value.source) == ("data.mean", str(path))


def test_a_wrong_value_set_on_the_command_line_names_the_override(tmp_path):
    path = write(tmp_path, {"pretrain": {"epochs": 7}})
    with pytest.raises(ConfigError) as err:
        load_config(path, ["filter.portions=[0.5, 1.5]"])
    assert str(err.value) == ("--set filter.portions: key 'filter.portions' = 1.5 must be < 1")
    assert (err.value.key, err.value.source) == ("filter.portions", "--set filter.portions")


def test_a_cross_key_error_names_the_source_of_its_key(tmp_path):
    path = write(tmp_path, {"pretrain": {"batch_size": 100}})
    with pytest.raises(ConfigError) as err:
        load_config(path, ["pretrain.accum_steps=3"])
    assert str(err.value).startswith(
        f"{path}: key 'pretrain.batch_size' = 100 is not a multiple of pretrain.accum_steps = 3"
    )
    assert (err.value.key, err.value.source) == ("pretrain.batch_size", str(path))


def test_errors_without_a_key_have_none():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["pretrain.epochs"])
    assert (err.value.key, err.value.source) == (None, "--set")
    with pytest.raises(ConfigError) as err:
        load_config("/nonexistent/params.yaml")
    assert (err.value.key, err.value.source) == (None, "/nonexistent/params.yaml")


def test_config_error_survives_pickling_and_copying():
    """Raised in a spawned worker or a SLURM job, it is pickled back to the parent."""
    import copy
    import pickle

    error = ConfigError("f.yaml: key 'a.b' must be an integer", key="a.b", source="f.yaml")
    for twin in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(twin) is ConfigError and str(twin) == str(error)
        assert (twin.key, twin.source) == ("a.b", "f.yaml")


# ---------------------------------------------------------------- validation through the schema

# what the hand-written validator answered, written out: jsonschema must answer the same
REFUSED = [
    (["pretrain.epochs=ten"], "key 'pretrain.epochs' must be an integer, got 'ten' (str)"),
    (["pretrain.epochs=5.0"], "key 'pretrain.epochs' must be an integer, got 5.0 (float)"),
    (["pretrain.deterministic=1"], "key 'pretrain.deterministic' must be a boolean, got 1 (int)"),
    (["pretrain.betas=[0.9, high]"], "key 'pretrain.betas[1]' must be a number, got 'high' (str)"),
    (["slurm.extra_sbatch=5"], "key 'slurm.extra_sbatch' must be a mapping, got 5 (int)"),
    (
        ["pretrain.amp=int8"],
        "key 'pretrain.amp' = 'int8' is not one of ['auto', 'bf16', 'fp16', 'fp32']",
    ),
    (
        ["pretrain.clip_mode=sideways"],  # null is allowed and not listed
        "key 'pretrain.clip_mode' = 'sideways' is not one of ['global', 'per_param']",
    ),
    (
        ["method.filter=5"],  # null by default: its choices, not its type
        "key 'method.filter' = 5 is not one of "
        "['com_rcom', 'mfm', 'random_frequency', 'random_patch', 'none']",
    ),
    (
        ["eval.robustness.corruptions=[jpeg, fog]"],
        "key 'eval.robustness.corruptions' = 'fog' is not one of "
        "['gaussian_noise', 'gaussian_blur', 'jpeg', 'contrast']",
    ),
    (["pretrain.batch_size=0"], "key 'pretrain.batch_size' = 0 must be >= 1"),
    (["filter.p_com=1.5"], "key 'filter.p_com' = 1.5 must be <= 1"),
    (["filter.mfm_radius=0"], "key 'filter.mfm_radius' = 0 must be > 0"),
    (["model.drop_path=1.0"], "key 'model.drop_path' = 1.0 must be < 1"),
    (["filter.portions=[]"], "key 'filter.portions' = [] needs at least 1 item(s)"),
    (
        ["augment.crop_scale=[0.1, 0.5, 1.0]"],
        "key 'augment.crop_scale' = [0.1, 0.5, 1.0] allows at most 2 item(s)",
    ),
    (["filter.p_com=.nan"], "key 'filter.p_com' = nan must be finite"),
    (["filter.p_com=.inf"], "key 'filter.p_com' = inf must be finite"),
    (["augment.contrast=.nan"], "key 'augment.contrast' = nan must be a finite number"),
    # constraints the generated schema leaves out, checked all the same
    (["method.p_com=1.5"], "key 'method.p_com' = 1.5 must be <= 1"),
    (["workflow.seeds=[3, -1]"], "key 'workflow.seeds' = -1 must be >= 0"),
    # of several wrong keys, the one reported before: types, the variant, then CONSTRAINTS
    (
        ["pretrain.amp=int8", "pretrain.epochs=x"],
        "key 'pretrain.epochs' must be an integer, got 'x' (str)",
    ),
    (
        ["pretrain.variant=nope", "pretrain.batch_size=0"],
        "key 'pretrain.variant' = 'nope' is not one of",
    ),
    (["filter.p_com=2", "data.num_workers=-1"], "key 'data.num_workers' = -1 must be >= 0"),
    (["filter.portions=[0.5, 2, -1]"], "key 'filter.portions' = 2 must be < 1"),
]


@pytest.mark.parametrize("sets, message", REFUSED, ids=[" ".join(s) for s, _ in REFUSED])
def test_schema_validation_refuses_what_folk_always_refused(sets, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, sets)
    # the override that set the key at fault is the source
    assert err.value.source == f"--set {err.value.key}"
    assert str(err.value).startswith(f"{err.value.source}: {message}"), str(err.value)


def test_a_null_by_default_key_is_type_checked_as_the_workflow_schema_does():
    """The hand-written validator checked only the choices of the method.* keys, so a
    string passed for method.p_com; the generated schema, which Snakemake applies, never
    let it through."""
    with pytest.raises(ConfigError, match=r"key 'method\.p_com' must be a number, got 'high'"):
        load_config(None, ["method.p_com=high"])
    assert load_config(None, ["method.p_com=0.25"])["method"]["p_com"] == 0.25


def test_validate_refuses_an_unknown_key_it_is_given_directly():
    from folk.config import defaults, validate

    cfg = defaults()
    cfg["pretrain"]["base_lrr"] = 1e-3
    with pytest.raises(ConfigError) as err:
        validate(cfg, "the submitted configuration")
    assert str(err.value) == (
        "the submitted configuration: unknown key 'pretrain.base_lrr' "
        "(did you mean 'pretrain.base_lr'?)"
    )


def test_the_schema_is_made_again_when_the_defaults_change(tmp_path, monkeypatch):
    import os
    import shutil

    import folk.config as config

    path = tmp_path / "defaults.yaml"
    shutil.copy(config.DEFAULTS_PATH, path)
    monkeypatch.setattr(config, "DEFAULTS_PATH", path)
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["pretrain.epochs=1.5"])
    text = path.read_text()
    # pretrain.epochs, the only key at this indentation with this name (its comment follows)
    edited = text.replace("\n  epochs: 300 ", "\n  epochs: 300.0 ", 1)
    assert edited != text
    path.write_text(edited)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_config(None, ["pretrain.epochs=1.5"])["pretrain"]["epochs"] == 1.5
