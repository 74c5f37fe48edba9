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
    assert cfg["method"] == {"filter": "mfm", "num_views": 1, "reconstruction": True,
                             "distillation": False, "p_com": 0.5}
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


@pytest.mark.parametrize("data, needle", [
    ({"pretrain": {"lrr": 1}}, "unknown key 'pretrain.lrr'"),
    ({"pretrian": {"lr": 1}}, "unknown key 'pretrian'"),
    ({"pretrain": {"epochs": "ten"}}, "key 'pretrain.epochs' must be an integer"),
    ({"pretrain": {"epochs": 1.5}}, "key 'pretrain.epochs' must be an integer"),
    ({"model": {"head_norm_last_layer": "yes"}}, "key 'model.head_norm_last_layer' must be a boolean"),
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
])
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
    code = "import sys; from folk.cli import main; main(['config', '--config', sys.argv[1]]); " \
           "print('torch' in sys.modules)"
    params = REPO / "folk" / "config" / "defaults.yaml"
    out = subprocess.run([sys.executable, "-c", code, str(params)], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    assert out[-1] == "False"
