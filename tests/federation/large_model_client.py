"""The participants' side of the 1 GiB test (``test_large_model.py``), as its own process.

``python -m tests.federation.large_model_client KITS WORK {submit|site} ...`` prints one JSON
line: what it did, how long each step took, and this process's memory (``VmRSS`` when it
started the transfers, its peak ``VmHWM`` at the end, in MiB). The model is written as a
tensor file from memory maps of a scratch file filled in 8 MiB pieces, so that nothing here
ever holds it: what the peak shows is what medfed's transfers hold.

- ``submit NAME TENSORS MIB``: the researcher writes a model of TENSORS float32 tensors of MIB
  MiB each, uploads it with ``upload_file`` and submits a job (one round, two sites);
- ``site A B JOB``: sites A and B approve the job and fetch their tasks; the one whose task
  comes second in the round (the coordinator yields replies in request order, so its update
  is not aggregated until the other answers) downloads the round's model with
  ``download_blob_to``, writes an update of the same layout, uploads it and replies. The other
  site's task is left open (its name and task id are printed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from medfed.federation.identity.kits import load_kit
from medfed.federation.transfer.client import FederationClient, client_for_kit
from medfed.records import Params
from medfed.tensor_file import open_params, write_params

MiB = 1 << 20
TASK = Path(__file__).resolve().parents[2] / "examples" / "breast_mlp.py"


def status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    raise KeyError(key)


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def memmapped(work: Path, tensors: int, mib: int) -> Params:
    """``tensors`` float32 tensors of ``mib`` MiB each, memory maps of a scratch file."""
    raw = work / "scratch.raw"
    with open(raw, "wb") as fh:  # a pattern, written in 8 MiB pieces
        piece = np.empty(2 * MiB, np.float32)
        for i in range(tensors * mib // 8):
            piece.fill((i % 13) * 0.01)
            fh.write(piece.data)
    n = mib * MiB // 4
    return Params(
        (
            f"layer{t}.weight",
            np.memmap(raw, "<f4", "r", offset=t * mib * MiB, shape=(n // 1024, 1024)),
        )
        for t in range(tensors)
    )


def client(kits: Path, role: str, name: str) -> FederationClient:
    return client_for_kit(load_kit(kits / role / name), timeout=60)


def submit(kits: Path, work: Path, name: str, tensors: int, mib: int) -> dict[str, Any]:
    times: dict[str, float] = {}
    t = time.monotonic()
    params = memmapped(work, tensors, mib)
    model = work / "initial.safetensors"
    sha, size = write_params(model, params)
    del params
    (work / "scratch.raw").unlink()
    times["write"] = time.monotonic() - t
    with client(kits, "researchers", name) as c:
        t = time.monotonic()
        assert c.upload_file(model, sha256=sha) == sha
        times["upload"] = time.monotonic() - t
        model.unlink()
        t = time.monotonic()
        job = c.post_json(
            "/v1/jobs",
            {
                "name": "large-model",
                "task_name": "breast_mlp",
                "bundle_sha256": c.upload_blob(TASK.read_bytes()),
                "initial_sha256": sha,
                "config": {"rounds": 1, "min_sites": 2, "round_timeout": 600, "evaluate_every": 0},
            },
        )
        times["submit"] = time.monotonic() - t
    return {"job": job["id"], "sha256": sha, "bytes": size, "seconds": times}


def _task(c: FederationClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no task"
        task = c.get_json("/v1/work?wait=5")["task"]
        if task is not None and task["job_id"] == job_id:
            return dict(task)


def site(kits: Path, work: Path, a: str, b: str, job_id: str) -> dict[str, Any]:
    for name in (a, b):
        with client(kits, "sites", name) as c:
            c.post_json(f"/v1/jobs/{job_id}/approval", {"status": "approved"})
    tasks = {}
    for name in (a, b):
        with client(kits, "sites", name) as c:
            tasks[name] = _task(c, job_id)
    early, name = sorted(tasks, key=lambda n: tasks[n]["id"])
    times: dict[str, float] = {}
    with client(kits, "sites", name) as c:
        task = tasks[name]
        t = time.monotonic()
        model = work / "model.safetensors"
        c.download_blob_to(task["params_sha256"], model)  # checked per range and whole
        times["download"] = time.monotonic() - t
        layout, _ = open_params(model)
        shapes = {k: v.shape for k, v in layout.items()}
        del layout
        model.unlink()
        t = time.monotonic()
        raw = work / "scratch.raw"  # the update: zeros of the model's layout (a sparse file)
        with open(raw, "wb") as fh:
            fh.truncate(sum(int(np.prod(s)) for s in shapes.values()) * 4)
        offset, arrays = 0, []
        for k, shape in shapes.items():
            arrays.append((k, np.memmap(raw, "<f4", "r", offset=offset, shape=shape)))
            offset += int(np.prod(shape)) * 4
        update = work / "update.safetensors"
        sha, size = write_params(update, Params(arrays))
        del arrays
        raw.unlink()
        times["write"] = time.monotonic() - t
        t = time.monotonic()
        c.upload_file(update, sha256=sha)
        times["upload"] = time.monotonic() - t
        update.unlink()
        header = {
            "site": name,
            "round": task["round"],
            "operation": task["operation"],
            "seconds": 1.0,
            "metrics": {"num_examples": 10, "loss": 0.5},
            "failure": None,
            "num_examples": 10,
        }
        t = time.monotonic()
        result = c.post_json(
            f"/v1/tasks/{task['id']}/reply", {"header": header, "blob_sha256": sha}
        )
        times["reply"] = time.monotonic() - t
    return {
        "status": result["status"],
        "site": name,
        "sha256": sha,
        "bytes": size,
        "seconds": times,
        "waiting": {"site": early, "task": tasks[early]},
    }


def main(argv: list[str]) -> None:
    kits, work, step, *args = argv
    Path(work).mkdir(parents=True, exist_ok=True)
    reset_peak()
    start_rss = status("VmRSS")
    if step == "submit":
        out = submit(Path(kits), Path(work), args[0], int(args[1]), int(args[2]))
    else:
        out = site(Path(kits), Path(work), args[0], args[1], args[2])
    out.update(start_rss_mib=start_rss, peak_mib=status("VmHWM"))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
