"""The typed assignment config: the real one loads; unknown keys and wrong types are named."""

from __future__ import annotations

import pytest

from autograder import config


def test_real_config_loads(assignment):
    assert assignment.name == "cnn_mnist"
    assert assignment.total_points == 100
    assert set(assignment.points) == {"shapes", "net", "device", "training", "evaluate"}
    assert assignment.check_points == {"training.accuracy": 15}
    assert assignment.source_notebook.is_file()
    assert 0 < assignment.accuracy.floor < assignment.accuracy.threshold <= 1


def write(tmp_path, text):
    (tmp_path / "assignment.toml").write_text(text)
    return tmp_path


BASE = 'name = "a"\nnotebook = "a.ipynb"\nmodule_cells = ["x"]\nmodel = "Net"\n[points]\nshapes = 10\n'


def test_minimal_config_takes_defaults(tmp_path):
    a = config.load(write(tmp_path, BASE))
    assert a.training.epochs == 1 and a.limits.memory_mb == 3072 and a.folder == tmp_path
    assert a.part_names == {}  # optional: the reports then name parts by their ids


def test_part_names_are_optional_per_part_and_language(tmp_path, assignment):
    a = config.load(write(tmp_path, BASE + "net = 5\n[part_names]\nnet = { en = 'The network' }\n"))
    assert a.part_names == {"net": config.PartName(ja="", en="The network")}
    assert list(assignment.part_names) == list(assignment.points)  # the real lab names every part
    assert all(n.ja and n.en for n in assignment.part_names.values())


@pytest.mark.parametrize("extra, message", [
    ("[training]\nepoch = 2\n", "unknown key epoch in [training]"),
    ("[training]\nepochs = '2'\n", "training.epochs must be an integer"),
    ("[training]\nepochs = true\n", "training.epochs must be an integer"),
    ("[accuracy]\nthreshold = 0.3\nfloor = 0.5\n", "floor < threshold"),
    ("[training]\noptimizer = 'rmsprop'\n", "training.optimizer must be 'sgd' or 'adam'"),
    ("[limits]\nmemory_mb = 0\n", "limits.memory_mb must be positive"),
    ("[grading]\nx = 1\n", "unknown key grading"),
    ("[check_points]\n'shapes.a' = 11\n", "check_points.shapes.a must be between 0 and the part's 10 points"),
    ("[check_points]\n'nope.a' = 1\n", "check_points.nope.a must be named 'part.check'"),
    ("[part_names]\nshapes = { ja = 'サイズ', fr = 'tailles' }\n", "unknown key fr in [part_names.shapes]"),
    ("[part_names]\nshapes = 'サイズ'\n", "part_names.shapes must be a table"),
    ("[part_names]\nshapes = { ja = 1 }\n", "part_names.shapes.ja must be a string"),
    ("[part_names]\nnope = { ja = 'x' }\n", "part_names.nope must name a part of [points]"),
    ("[training]\nholdout = 60000\n", "training.holdout must be between 0 and 59999"),
])
def test_bad_configs_name_the_key(tmp_path, extra, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, BASE + extra))
    assert message in str(err.value)
    assert "assignment.toml" in str(err.value)


def test_missing_required_key(tmp_path):
    with pytest.raises(config.ConfigError, match="missing keys module_cells, model"):
        config.load(write(tmp_path, 'name = "a"\nnotebook = "a.ipynb"\n'))


def test_unknown_assignment_lists_known(tmp_path):
    (tmp_path / "lab1").mkdir()
    write(tmp_path / "lab1", BASE)
    with pytest.raises(config.ConfigError, match=r"no assignment 'lab2' .*known: lab1"):
        config.find("lab2", root=tmp_path)


def test_invalid_toml(tmp_path):
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "name = \n"))


@pytest.mark.parametrize("top, message", [
    ('model = "Net"\ndataset = "cifar"\n', "dataset must be one of mnist, not 'cifar'"),
    ('model = "my net"\n', "model must be the name of the answer key's network class"),
    ('model = "Net"\nruntime_modules = ["labkit..steps"]\n', "runtime_modules: 'labkit..steps' is not a module name"),
    ("", "missing key model"),
])
def test_bad_top_level_keys_are_named(tmp_path, top, message):
    text = BASE.replace('model = "Net"\n', "").replace("[points]", top + "[points]")
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, text))
    assert message in str(err.value)


def test_a_runtime_module_that_does_not_exist_is_named(tmp_path):
    a = config.load(write(tmp_path, BASE.replace("[points]", 'runtime_modules = ["labkit.nope"]\n[points]')))
    (tmp_path / "runtime.py").write_text("")
    with pytest.raises(config.ConfigError, match="labkit.nope is not a Python module"):
        config.runtime_sources(a)
