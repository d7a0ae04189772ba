"""load_task: every way a reference can be wrong gets one clear sentence; the examples load."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import TaskLoadError
from medfed.messages import RoundSettings
from medfed.records import Instruction, Operation
from medfed.site.task import Task
from medfed.site.task_loading import load_task, split_ref

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """
from torch import nn
from medfed.site.task import Task

def build(spec):
    return nn.Linear(spec.input_shape[0], spec.n_outputs)

task = Task(model=build, name="first")
other = Task(model=build, name="second")
not_a_task = 42

def make_task():
    return Task(model=build, name="made")

def make_nothing():
    return "nothing"

def make_broken():
    raise RuntimeError("no GPU")

def needs_args(spec):
    return Task(model=build)

class Holder:
    pass
"""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small models gain nothing from intra-op threads, and on a busy machine (2 cores shared
    with other test runs) two spinning threads made this module 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return path


def load_error(ref: str) -> str:
    with pytest.raises(TaskLoadError) as info:
        load_task(ref)
    error = info.value
    assert error.exit_code == 2
    assert error.__cause__ is None  # no chained traceback
    assert error.__context__ is None or error.__suppress_context__
    message = str(error)
    assert "Traceback" not in message and "\n" not in message
    return message


# --- references that work ---------------------------------------------------------------------


def test_split_ref() -> None:
    assert split_ref("a/b.py") == ("a/b.py", "task")
    assert split_ref(" a/b.py:other ") == ("a/b.py", "other")
    assert split_ref("pkg.mod:make") == ("pkg.mod", "make")
    assert split_ref("C:\\tasks\\t.py") == ("C:\\tasks\\t.py", "task")
    assert split_ref("C:\\tasks\\t.py:mine") == ("C:\\tasks\\t.py", "mine")


def test_file_reference_with_default_and_named_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, "my_task.py", GOOD)
    assert load_task(str(path)).name == "first"
    assert load_task(f"{path}:other").name == "second"
    assert isinstance(load_task(f"{path}:task"), Task)


def test_a_factory_without_arguments_is_called(tmp_path: Path) -> None:
    path = write(tmp_path, "my_task.py", GOOD)
    assert load_task(f"{path}:make_task").name == "made"


def test_module_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "labtasks_a/__init__.py", "")
    write(tmp_path, "labtasks_a/cnn.py", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_task("labtasks_a.cnn").name == "first"
    assert load_task("labtasks_a.cnn:other").name == "second"


def test_a_task_file_may_import_its_neighbours(tmp_path: Path) -> None:
    write(tmp_path, "lab_helpers_b.py", "WIDTH = 8\n")
    path = write(
        tmp_path,
        "uses_helper.py",
        """
        from torch import nn
        from lab_helpers_b import WIDTH
        from medfed.site.task import Task

        task = Task(model=lambda spec: nn.Linear(WIDTH, 1))
        """,
    )
    before = list(sys.path)
    assert isinstance(load_task(str(path)), Task)
    assert sys.path == before


def test_a_file_is_read_afresh_on_every_load(tmp_path: Path) -> None:
    path = write(tmp_path, "edited.py", GOOD)
    assert load_task(str(path)).name == "first"
    path.write_text(GOOD.replace('name="first"', 'name="edited"'), encoding="utf-8")
    assert load_task(str(path)).name == "edited"


# --- every error path -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(str(tmp_path / "nope.py"))
    assert "nope.py does not exist" in message and "path/to/file.py:attr" in message


def test_a_folder_is_not_a_task_file(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    assert "is a folder" in load_error(f"{tmp_path / 'tasks'}/:task")


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "import torch\n\ndef build(spec)\n    return 1\n")
    message = load_error(f"{path}:task")
    assert message.startswith(f"task file {path} has a syntax error at line 3")
    assert "fix it" in message


def test_import_error_inside_the_module_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "needs_pkg.py", "import os\nimport not_installed_pkg_xyz\n")
    message = load_error(str(path))
    assert f"task file {path} failed to import at line 2" in message
    assert "ModuleNotFoundError: No module named 'not_installed_pkg_xyz'" in message


def test_runtime_error_points_at_the_deepest_line_of_the_task_file(tmp_path: Path) -> None:
    write(tmp_path, "lab_helpers_d.py", "def load():\n    return 1 / 0\n")
    path = write(
        tmp_path,
        "calls_helper.py",
        """
        import lab_helpers_d

        def scale():
            return lab_helpers_d.load()

        x = 1
        y = scale()
        """,
    )
    message = load_error(str(path))
    assert "failed to import at line 4 (ZeroDivisionError: division by zero)" in message


def test_a_bad_task_definition_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "bad_task.py", "from medfed.site.task import Task\ntask = Task(model=3)\n"
    )
    message = load_error(str(path))
    assert "at line 2" in message and "must be a function" in message


def test_sys_exit_in_a_module_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    assert "it called sys.exit(3)" in load_error(str(path))


def test_unknown_module() -> None:
    message = load_error("no_such_pkg_xyz.tasks:task")
    assert "there is no module named 'no_such_pkg_xyz.tasks'" in message
    assert "PYTHONPATH" in message


def test_module_whose_own_import_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "labtasks_c/broken.py", "import json\nimport missing_dep_xyz\n")
    write(tmp_path, "labtasks_c/__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = load_error("labtasks_c.broken")
    assert f"task module labtasks_c.broken ({path.resolve()}) failed to import at line 2" in (
        message
    )
    assert "missing_dep_xyz" in message


def test_not_a_module_name() -> None:
    assert "neither a .py file nor a module name" in load_error("my task")


def test_missing_attribute_lists_the_tasks_defined(tmp_path: Path) -> None:
    path = write(tmp_path, "my_task.py", GOOD)
    message = load_error(f"{path}:taks")
    assert message == (
        f"{path} has no attribute 'taks'; the Task objects it defines are: other, task"
    )


def test_missing_attribute_in_a_module_without_tasks(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.py", "x = 1\n")
    assert "it defines no Task; add one, e.g. task = Task(model=build_model)" in load_error(
        str(path)
    )


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("not_a_task", "is a int, not a medfed Task"),
        ("Holder", "is a type, not a medfed Task"),
        ("needs_args", "is a function, not a medfed Task"),
        ("make_nothing", "make_nothing() returned a str, not a medfed Task"),
        ("make_broken", "make_broken() failed while making the task (RuntimeError: no GPU)"),
    ],
)
def test_attribute_that_is_not_a_task(tmp_path: Path, attr: str, expected: str) -> None:
    path = write(tmp_path, "my_task.py", GOOD)
    assert expected in load_error(f"{path}:{attr}")


@pytest.mark.parametrize("ref", ["", "   ", "tasks.py:"])
def test_empty_references(ref: str) -> None:
    load_error(ref)


# --- the examples -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def breast() -> tuple[DataSpec, SiteData]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return DataSpec(TaskKind.BINARY, (30,)), SiteData("b", x[:400], y[:400], x[400:], y[400:])


@pytest.mark.parametrize("name", ["breast_mlp.py", "custom_train.py"])
def test_examples_load_and_fit(name: str, breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast
    task = load_task(str(EXAMPLES / name))
    params = task.initial_params(spec, seed=0)
    app = task.site_app(data, spec, TrainSettings(local_epochs=3), device="cpu")
    result = app.fit(
        params, Instruction(Operation.TRAIN, 0, params, 0, RoundSettings(proximal_mu=0.01))
    )
    metrics = app.evaluate(result.params, Instruction(Operation.EVALUATE, 0, result.params, 0))
    assert result.num_examples == 400 and result.metrics.loss is not None
    assert metrics.accuracy is not None and metrics.accuracy > 0.9
    if name == "custom_train.py":
        assert result.metrics.extra == {"proximal_mu": 0.01}


def test_custom_train_example_handles_survival_batches_without_events() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    time = rng.uniform(1, 100, 60)
    event = (rng.uniform(size=60) < 0.1).astype(float)  # few events: some batches have none
    y = np.column_stack([time, event])
    spec = DataSpec(TaskKind.SURVIVAL, (4,))
    task = load_task(f"{EXAMPLES / 'custom_train.py'}:task")
    params = task.initial_params(spec, seed=0)
    app = task.site_app(SiteData("s", x, y, x, y), spec, TrainSettings(batch_size=8))
    result = app.fit(params, Instruction(Operation.TRAIN, 0, params, 0))
    assert result.params != params


def test_breast_example_refuses_other_data() -> None:
    task = load_task(str(EXAMPLES / "breast_mlp.py"))
    with pytest.raises(TaskLoadError, match="tabular binary data, not survival data"):
        task.initial_params(DataSpec(TaskKind.SURVIVAL, (5,)), seed=0)
