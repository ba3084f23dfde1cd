"""The Dispatch flow through the `eventgate` command, as a user types it (subprocesses): image,
function from the example folder, invocations, records; then secrets, JSON output for scripts
and errors that say what to do (the same command run in-process, against the same real node)."""

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from eventgate.cli import main
from tests.python_helpers import EXAMPLE, IMAGE, PythonNode

HELLO_LINE = "messages to stdout show up in logs"


def eventgate(
    node: PythonNode | str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    url = node if isinstance(node, str) else node.config_url
    return subprocess.run(
        [sys.executable, "-m", "eventgate", "--config-url", url, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def run(node: PythonNode | str, *args: str) -> Result:
    """The command in this process (quicker than a subprocess; same code, same node)."""
    url = node if isinstance(node, str) else node.config_url
    return CliRunner().invoke(main, ["--config-url", url, *args])


def test_the_dispatch_flow_through_the_cli(python_node: PythonNode, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(python_node.config.get(f"/images/{IMAGE}").json()["requirements"])

    image = eventgate(python_node, "image", "create", "cli-python3", "-r", str(requirements))
    function = eventgate(
        python_node, "function", "create", "cli-hello", str(EXAMPLE),
        "--image", "cli-python3", "--handler", "hello.handle",
    )  # fmt: skip
    default = eventgate(python_node, "function", "invoke", "cli-hello")
    named = eventgate(
        python_node, "function", "invoke", "cli-hello", "--input",
        '{"name":"Jon","place":"Winterfell"}', "--output", "json",
    )  # fmt: skip

    assert image.returncode == 0, image.stderr
    assert "READY" in image.stdout and "tinygreet" in image.stdout
    assert function.returncode == 0, function.stderr
    assert "READY" in function.stdout and "hello.handle" in function.stdout
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout.split("stdout:")[0]) == {
        "myField": "Hello, Noone from Nowhere"
    }
    assert HELLO_LINE in default.stdout
    assert named.returncode == 0, named.stderr
    record = json.loads(named.stdout)
    assert record["payload"] == {"myField": "Hello, Jon from Winterfell"}
    assert record["context"]["logs"]["stdout"] == [HELLO_LINE]

    # The rest in-process: the same command, quicker.
    listed = run(python_node, "invocation", "list", "--function", "cli-hello")
    shown = run(python_node, "invocation", "get", record["invocationId"])
    functions = run(python_node, "function", "list", "-o", "json")
    images = run(python_node, "image", "list")
    background = run(python_node, "function", "invoke", "cli-hello", "--no-wait")

    assert listed.exit_code == 0 and record["invocationId"] in listed.stdout
    assert shown.exit_code == 0 and "Hello, Jon from Winterfell" in shown.stdout
    by_name = {f["functionId"]: f for f in json.loads(functions.stdout)["functions"]}
    assert by_name["cli-hello"]["status"] == "READY"
    assert "cli-python3" in images.stdout and "READY" in images.stdout
    assert background.exit_code == 0 and len(background.stdout.strip()) == 36

    in_use = run(python_node, "image", "delete", "cli-python3")
    deleted = run(python_node, "function", "delete", "cli-hello")
    image_deleted = run(python_node, "image", "delete", "cli-python3")
    assert in_use.exit_code == 1 and "cli-hello" in in_use.stderr
    assert deleted.exit_code == 0 and image_deleted.exit_code == 0


def test_secrets_and_failures_through_the_cli(python_node: PythonNode, tmp_path: Path) -> None:
    source = tmp_path / "greeter.py"  # one file: the handler defaults to greeter.handle
    source.write_text(
        "def handle(ctx, payload):\n"
        "    if payload == 'fail':\n"
        "        raise ValueError('no thanks')\n"
        "    return ctx['secrets']['token'][:3]\n"
    )

    secret = run(python_node, "secret", "create", "cli-token", "token=s3cr3t-value")
    secrets = run(python_node, "secret", "list")
    created = run(
        python_node, "function", "create", "cli-greeter", str(source), "--image", IMAGE,
        "--secret", "cli-token", "--timeout", "2",
    )  # fmt: skip
    called = run(python_node, "function", "invoke", "cli-greeter", "-o", "json")
    failed = run(python_node, "function", "invoke", "cli-greeter", "--input", '"fail"')
    missing = run(python_node, "function", "get", "cli-nothing")
    unreachable = run("http://127.0.0.1:9", "image", "list")
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "main.py").write_text("import not_a_module_anywhere\n")
    broken = run(python_node, "function", "create", "cli-broken", str(broken_dir), "--image", IMAGE)

    assert secret.exit_code == 0 and "token" in secret.stdout
    assert "s3cr3t" not in secret.stdout + secrets.stdout
    assert created.exit_code == 0, created.stderr
    assert "PT2S" in created.stdout
    assert json.loads(called.stdout)["payload"] == "s3c"
    assert failed.exit_code == 1 and "InputError" in failed.stderr
    assert "no thanks" in failed.stderr
    assert missing.exit_code == 1 and "eventgate function list" in missing.stderr
    assert unreachable.exit_code == 1 and "eventgate serve" in unreachable.stderr
    assert broken.exit_code == 1
    assert "not_a_module_anywhere" in broken.stderr and "function update" in broken.stderr
    for command in (
        ("function", "delete", "cli-greeter"),
        ("function", "delete", "cli-broken"),
        ("secret", "delete", "cli-token"),
    ):
        assert run(python_node, *command).exit_code == 0
