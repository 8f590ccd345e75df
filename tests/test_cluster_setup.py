"""What a cluster batch is made of, without grading: the course's [cluster] table, the Slurm job script it
becomes, the lab copy a worker verifies, and a worker's checks on itself."""

from __future__ import annotations

import re
import shutil

import pytest

from autograder import slot
from autograder.cluster import slurm_cluster
from autograder.config import ConfigError
from autograder.course import Course
from autograder.results import fingerprint

from repo import COURSE, REPO_ROOT


def course_with(tmp_path, toml: str) -> Course:
    (tmp_path / "course.toml").write_text(toml, encoding="utf-8")
    return Course.at(tmp_path)


def test_the_cluster_table_is_read_key_by_key(tmp_path):
    course = course_with(tmp_path, 'source = "labs"\n[cluster]\nqueue = "gpu"\njobs = 4\ncores = 8\ngpus = 1\n'
                                   'prologue = ["module load cuda", "source /opt/kit/bin/activate"]\n')
    assert course.source == "labs"
    assert (course.cluster.queue, course.cluster.jobs, course.cluster.cores, course.cluster.gpus) == ("gpu", 4, 8, 1)
    assert course.cluster.prologue == ("module load cuda", "source /opt/kit/bin/activate")
    assert Course.at(REPO_ROOT).cluster.jobs == 1  # no table: the defaults


@pytest.mark.parametrize("toml, says", [
    ('[cluster]\nqueues = "gpu"\n', "unknown key queues in [cluster]"),
    ('[cluster]\ncores = "8"\n', "cluster.cores must be an integer"),
    ('[cluster]\njobs = 0\n', "jobs and cores must be at least 1"),
    ('[cluster]\nprologue = "module load cuda"\n', "cluster.prologue must be a list of strings"),
])
def test_a_wrong_cluster_table_names_the_file_and_the_key(tmp_path, toml, says):
    with pytest.raises(ConfigError, match=re.escape(says)) as failed:
        course_with(tmp_path, toml)
    assert "course.toml" in str(failed.value)


def test_the_slurm_job_script_carries_the_tables_settings(tmp_path):
    course = course_with(tmp_path, '[cluster]\nqueue = "gpu"\naccount = "ml-course"\njobs = 2\ncores = 4\n'
                                   'memory = "16GB"\nwalltime = "02:00:00"\ngpus = 1\nhost = "127.0.0.1"\n'
                                   'prologue = ["export MNIST_DIR=/shared/mnist"]\ndirectives = ["--qos=short"]\n')
    cluster = slurm_cluster(course.cluster, tmp_path / "logs")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A ml-course", "#SBATCH --cpus-per-task=4", "#SBATCH -t 02:00:00",
                 "#SBATCH --qos=short", "#SBATCH --gres=gpu:1", "export MNIST_DIR=/shared/mnist"):
        assert line in script, (line, script)
    # One worker process per core, one thread each; no nanny memory limit (the sandboxes have their own).
    assert "--nworkers 4" in script and "--nthreads 1" in script and "--memory-limit 0" in script, script
    assert str(tmp_path / "logs") in script


def test_a_worker_unpacks_the_lab_and_checks_its_fingerprint(tmp_path):
    lab = COURSE.lab("cnn_mnist")
    copy = slot.LabCopy.of(lab, fingerprint(lab).digest)
    assert "hidden/probes.py" in copy.files and not any("__pycache__" in name for name in copy.files)
    unpacked = copy.unpack(tmp_path / "a")
    assert fingerprint(unpacked).digest == fingerprint(lab).digest and unpacked.folder != lab.folder
    # A copy that is not the client's (here: its checks edited on the way) is refused with what to do.
    files = dict(copy.files)
    files["hidden/checks_net.py"] += b"\n# edited\n"
    with pytest.raises(RuntimeError, match="the worker's kit differs from the client's"):
        slot.LabCopy(copy.name, files, copy.fingerprint).unpack(tmp_path / "b")
    with pytest.raises(ValueError, match="outside its folder"):
        slot.LabCopy(copy.name, {"../escape.py": b""}, copy.fingerprint).unpack(tmp_path / "c")


def test_a_worker_refuses_another_kit_missing_data_and_cuda_it_does_not_have(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    assert "differs from the client's" in slot.refusal("cpu", "0" * 64, ("mnist",))
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    assert "the data set mnist cannot be read here: MNIST files missing" in slot.refusal("cpu", slot.kit_digest(),
                                                                                            ("mnist",))
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    import torch

    if not torch.cuda.is_available():
        assert "no usable CUDA GPU here" in slot.refusal("cuda", slot.kit_digest(), ("mnist",))
    monkeypatch.setattr(slot, "kit_digest", lambda: "a" * 64)
    assert "differs" not in (slot.refusal("cpu", "a" * 64, ("mnist",)) or "")


def test_the_kit_digest_covers_the_engine_and_the_shared_lab_code(tmp_path, monkeypatch):
    import autograder
    import labkit

    before = slot.kit_digest()
    fake = tmp_path / "autograder"
    shutil.copytree(autograder.__path__[0], fake, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "judge.py").write_text((fake / "judge.py").read_text() + "\n# one more line\n")
    monkeypatch.setattr(autograder, "__file__", str(fake / "__init__.py"))
    slot.kit_digest.cache_clear()
    try:
        assert slot.kit_digest() != before
    finally:
        monkeypatch.undo()
        slot.kit_digest.cache_clear()
    assert slot.kit_digest() == before and labkit.__file__


def test_a_submission_whose_workers_keep_dying_is_left_ungraded_with_the_reason():
    from distributed.scheduler import KilledWorker

    from autograder.cluster import ClusterPool
    from autograder.submissions import Submission

    class Dead:
        address = "tcp://10.0.0.7:40000"

    class Future:
        def result(self):
            raise KilledWorker("grade-x", Dead(), 3)

    pool = ClusterPool(client=None)
    assert pool._outcome(Future(), Submission(student_id="ann", notebook=b"{}", source="ann.ipynb")) is None
    [line] = pool.notes()
    assert line.en == ("not graded: ann: 4 workers died while grading it, the last tcp://10.0.0.7:40000 (run the "
                       "same command again to grade it)")
    assert "採点されていません: ann" in line.ja


def test_a_scheduler_lost_mid_batch_is_a_clear_error_that_loses_nothing(tmp_path):
    from distributed.comm.core import CommClosedError

    from autograder import grade
    from autograder.cluster import ClusterError, ClusterPool
    from autograder.results import ResultStore
    from autograder.submissions import Submission

    class Gone:
        loop = None

        def register_plugin(self, *args, **kwargs):
            raise CommClosedError("in <TCP (closed) ConnectionPool.register_worker_plugin local=tcp://127.0.0.1:1>")

        def get_events(self, topic):
            raise CommClosedError("closed")

    subs = [Submission(student_id="ann", notebook=b"{}", source="ann.ipynb")]
    with pytest.raises(ClusterError, match="lost the Dask scheduler .*CommClosedError.*results saved so far are kept"):
        grade.grade(COURSE.lab("cnn_mnist"), subs, tmp_path / "out", grade.Options(), pool=ClusterPool(Gone()))
    assert ResultStore(tmp_path / "out").load_all() == []
