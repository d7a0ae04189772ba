"""Find a researcher's :class:`~medfed.site.task.Task` from a reference string.

A reference is ``path/to/file.py:attr`` or ``package.module:attr``; without ``:attr`` the
attribute is ``task``. The attribute may be a ``Task`` or a function taking no arguments that
returns one. Every failure is one :class:`~medfed.errors.TaskLoadError` sentence naming the file
and line, never a traceback, so the CLI can print it and exit with code 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType

from medfed.errors import TaskLoadError
from medfed.site.task import Task

__all__ = ["load_task", "split_ref"]

DEFAULT_ATTR = "task"


def split_ref(ref: str) -> tuple[str, str]:
    """``"a/b.py:my_task"`` → ``("a/b.py", "my_task")``; the attribute defaults to ``task``.

    A colon that is not followed by an identifier (a Windows drive, ``C:\\tasks\\t.py``) is
    part of the path.

    >>> split_ref("examples/breast_mlp.py"), split_ref("pkg.mod:build")
    (('examples/breast_mlp.py', 'task'), ('pkg.mod', 'build'))
    """
    ref = ref.strip()
    head, sep, attr = ref.rpartition(":")
    if sep and head and attr.isidentifier():
        return head, attr
    if sep and head and not attr:
        raise TaskLoadError(f"task reference {ref!r} ends with ':'; name the attribute after it")
    return ref, DEFAULT_ATTR


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def load_task(ref: str) -> Task:
    """Import the module that ``ref`` names and return its task.

    A file is executed afresh on every call (edits are picked up); a module name goes
    through the normal import system (imported once per process).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise TaskLoadError("the task reference is empty; give path/to/file.py:attr")
    source, attr = split_ref(ref)
    module = _import_file(Path(source)) if _is_path(source) else _import_module(source)
    if not hasattr(module, attr):
        raise TaskLoadError(f"{source} has no attribute {attr!r}; {_tasks_defined(module)}")
    return _as_task(getattr(module, attr), f"{source}:{attr}")


def _import_file(path: Path) -> ModuleType:
    if not path.exists():
        raise TaskLoadError(
            f"task file {path} does not exist; check the path "
            "(the form is path/to/file.py:attr, relative to the current directory)"
        )
    if path.is_dir():
        raise TaskLoadError(f"task path {path} is a folder; name the .py file inside it")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    name = f"medfed_task_{_identifier(path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TaskLoadError(f"task file {path} cannot be imported; give a .py file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it (dataclasses and pickling look their module up); the
    # file's folder is importable while it runs, so it can import its sibling modules.
    sys.modules[name] = module
    folder = str(resolved.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise TaskLoadError(_import_failure(exc, path, resolved)) from None
    finally:
        _remove_first(sys.path, folder)
    return module


def _import_module(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise TaskLoadError(
            f"task reference {name!r} is neither a .py file nor a module name; "
            "give path/to/file.py:attr or package.module:attr"
        )
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise TaskLoadError(
                f"there is no module named {name!r}; install it, add its folder to "
                "PYTHONPATH, or give the path of its .py file instead"
            ) from None
        raise TaskLoadError(_import_failure(exc, name, _origin(name))) from None
    except (Exception, SystemExit) as exc:
        raise TaskLoadError(_import_failure(exc, name, _origin(name))) from None


def _origin(name: str) -> Path | None:
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    return Path(origin).resolve() if origin else None


def _import_failure(exc: BaseException, shown: Path | str, resolved: Path | None) -> str:
    """One sentence: which file, which line, what went wrong."""
    if isinstance(shown, Path):
        label = f"task file {shown}"
    else:
        label = f"task module {shown}" + (f" ({resolved})" if resolved is not None else "")
    if isinstance(exc, SyntaxError):
        inside = ""
        if exc.filename and (resolved is None or Path(exc.filename) != resolved):
            inside = f" (in {exc.filename})"
        line = f" at line {exc.lineno}" if exc.lineno else ""
        return f"{label} has a syntax error{line}{inside}: {exc.msg}; fix it and run again"
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SystemExit):
        what = f"it called sys.exit({exc.code!r})"
    return f"{label} failed to import{_location(exc, resolved)} ({what}); fix it and run again"


def _location(exc: BaseException, task_file: Path | None) -> str:
    """The last line of the task file that the traceback passes through, else the innermost
    frame outside the import machinery."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and Path(f.filename) != Path(__file__)
    ]
    own = [f for f in frames if task_file is not None and Path(f.filename) == task_file]
    if own:
        return f" at line {own[-1].lineno}"
    if frames:
        return f" at {frames[-1].filename} line {frames[-1].lineno}"
    return ""


def _tasks_defined(module: ModuleType) -> str:
    names = sorted(k for k, v in vars(module).items() if isinstance(v, Task))
    if names:
        return f"the Task objects it defines are: {', '.join(names)}"
    return "it defines no Task; add one, e.g. task = Task(model=build_model)"


def _as_task(obj: object, where: str) -> Task:
    if isinstance(obj, Task):
        return obj
    if callable(obj) and not inspect.isclass(obj) and _takes_no_arguments(obj):
        try:
            made = obj()
        except TaskLoadError:
            raise
        except Exception as exc:
            raise TaskLoadError(
                f"{where}() failed while making the task ({type(exc).__name__}: {exc}); "
                "fix it and run again"
            ) from None
        if isinstance(made, Task):
            return made
        raise TaskLoadError(
            f"{where}() returned a {type(made).__name__}, not a medfed Task; "
            "return Task(model=...) from it"
        )
    raise TaskLoadError(
        f"{where} is a {type(obj).__name__}, not a medfed Task; "
        "point at a Task(model=...) object or a function without arguments that returns one"
    )


def _takes_no_arguments(fn: object) -> bool:
    try:
        inspect.signature(fn).bind()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _identifier(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
    return cleaned or "module"


def _remove_first(items: list[str], value: str) -> None:
    with contextlib.suppress(ValueError):
        items.remove(value)
