"""What a command says when its broker is not there, or its port is taken:
one line naming the cause and what to check, never aiokafka's traceback; and
a promotion that cannot be announced switches nothing. (Real sockets: a port
nobody listens on, a port a test holds.)"""

import socket

import pytest

from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.promotion import current_namespace, ensure_current
from calstream.daemon.operations.cli.main import main


@pytest.fixture
def nobody():
    """HOST:PORT where nothing listens (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def _one_line(err: str, *, cause: str) -> None:
    ours = [line for line in err.splitlines() if line.startswith("calstream:")]
    assert len(ours) == 1 and cause in ours[0], err
    assert "Traceback" not in err and "Exception Group" not in err, err


@pytest.mark.parametrize("command", [["deadletters", "list"], ["holds", "list"],
                                     ["plan", "list"], ["topics", "list"]])
def test_an_unreachable_broker_is_one_line(command, nobody, tmp_path, capsys):
    assert main([*command, "--work-dir", str(tmp_path), "--kafka-bootstrap", nobody]) == 1
    _one_line(capsys.readouterr().err, cause="the Kafka broker does not answer")


def test_a_promotion_nobody_could_hear_of_switches_nothing(nobody, tmp_path, capsys):
    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    ns = store.for_namespace("n1")
    scratch = ns.scratch("01234", "001", "w" * 64)
    (scratch / "jw_rate.fits").write_bytes(b"x")
    ns.publish(scratch, "01234", "001", name="jw", stage="detector1",
               record={"work_id": "w" * 64, "event": {"crds_context": "jwst_0002.pmap",
                                                      "outputs": []}})
    assert main(["promote", "n1", "--work-dir", str(tmp_path), "--kafka-bootstrap",
                 nobody]) == 1
    _one_line(capsys.readouterr().err, cause="the Kafka broker does not answer")
    assert current_namespace(store) == "live"
    assert not (store.top / "promotions").exists()


def test_a_taken_metrics_port_is_one_line(nobody, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "{}:{}".format(*taken.getsockname())
        code = main(["run", "--work-dir", str(tmp_path), "--kafka-bootstrap", nobody,
                     "--metrics-address", address])
    assert code == 2
    _one_line(capsys.readouterr().err, cause=f"metrics_address {address}: the operations "
                                             "endpoint cannot listen there")
    assert not (tmp_path / "deployment.json").exists()


def test_a_subscriber_whose_broker_is_not_there_is_one_line_and_closed(nobody):
    """Its consumer, started outside the try that stops it, was left to the
    garbage collector: "Unclosed AIOKafkaConsumer" and its repr after the one
    line, at the process's exit (so a process of its own here)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "calstream.daemon.operations.cli",
                           "subscribe", "--kafka-bootstrap", nobody, "--max", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    _one_line(done.stderr, cause="the Kafka broker does not answer")
    assert "Unclosed" not in done.stderr, done.stderr


def test_a_write_dir_that_cannot_be_one_is_one_line(nobody, tmp_path, capsys):
    """`subscribe --write-dir` naming a file ended in mkdir's traceback."""
    (tmp_path / "a-file").write_text("")
    assert main(["subscribe", "--kafka-bootstrap", nobody, "--write-dir",
                 str(tmp_path / "a-file")]) == 2
    _one_line(capsys.readouterr().err, cause="--write-dir")


def test_a_taken_console_port_is_one_line(tmp_path, capsys):
    """`calstream console --address` on a port another process has ended in
    socketserver's bind traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "{}:{}".format(*taken.getsockname())
        code = main(["console", "--work-dir", str(tmp_path), "--address", address])
    assert code == 2
    _one_line(capsys.readouterr().err, cause=f"--address {address}: the console cannot listen "
                                             "there (Address already in use)")


def test_status_of_a_work_dir_no_daemon_runs_with_says_so(tmp_path, capsys):
    """`calstream status --work-dir TYPO` read the default endpoint, the
    summary of whatever daemon held it, and exited 0 with "broker (none)"."""
    assert main(["status", "--work-dir", str(tmp_path / "typo"), "--timeout", "1"]) == 1
    _one_line(capsys.readouterr().err, cause="no daemon is recorded in")


@pytest.mark.parametrize("command", [["holds", "list"], ["deadletters", "list"],
                                     ["plan", "list"], ["topics", "list"], ["subscribe"]])
def test_a_work_dir_no_daemon_runs_with_is_named(command, tmp_path, capsys):
    """`holds list --work-dir W` of a stopped daemon (or a typo) said only
    "need a broker: --kafka-bootstrap", as if --work-dir had been ignored."""
    typo = tmp_path / "typo"
    assert main([*command, "--work-dir", str(typo)]) == 2
    _one_line(capsys.readouterr().err, cause=f"no daemon is recorded in {typo}/deployment.json")


def test_a_refusal_is_said_on_stderr(tmp_path, capsys):
    """`deadletters redrive` with no selection and `plan load` of a file that
    is no plan printed their error on stdout, the result's: a script that
    keeps stdout (or shows only stderr) lost it."""
    work = ["--work-dir", str(tmp_path)]
    assert main(["deadletters", "redrive", "--reason", "CRDS cache resynced", *work]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "say which dead letters to redrive" in err, (out, err)
    assert main(["plan", "load", str(tmp_path / "none.json"), "--dry-run", *work]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "cannot read plan" in err, (out, err)
