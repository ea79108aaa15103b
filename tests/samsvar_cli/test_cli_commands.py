"""The ``samsvar`` command's small subcommands: keys and registry."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from samsvar.cli import event_loop_factory, main
from samsvar.common import CliError
from samsvar.secret_files import write_secret
from schemas.jose import DEFAULT_ALG, generate_key, load_private_key


def test_keys_generate_writes_private_and_prints_public(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.jwk"
    assert main(["keys", "generate", "--alg", "ES256", "--out", str(out)]) == 0
    public = json.loads(capsys.readouterr().out)
    assert "d" not in public and public["alg"] == "ES256" and public["kid"]
    private = load_private_key(out)
    assert private.kid == public["kid"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keys_generate_defaults_to_the_cheapest_algorithm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --alg, a new key is schemas.jose.DEFAULT_ALG: Ed25519 (EdDSA), which costs least
    per answer (bench/RESULTS.md, "Signature algorithms"); the demo's keys are the same."""
    from samsvar.demo import _key

    out = tmp_path / "k.jwk"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    public = json.loads(capsys.readouterr().out)
    assert DEFAULT_ALG == "EdDSA"
    assert public["alg"] == DEFAULT_ALG and public["crv"] == "Ed25519"
    assert load_private_key(out).alg == DEFAULT_ALG
    assert _key(tmp_path, "demo-broker").alg == DEFAULT_ALG


def test_keys_generate_refuses_to_overwrite(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.jwk"
    out.write_text("{}")
    assert main(["keys", "generate", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err


def registry_text(extra_type: str = "medication") -> str:
    key = generate_key().public.to_jwk()
    jwk = "[{ " + ", ".join(f'{k} = "{v}"' for k, v in key.items()) + " }]"
    return "\n".join([
        "[broker]", 'id = "B"', f"keys = {jwk}", "",
        "[[participants]]", 'id = "ORG1"', 'name = "Region"', 'kind = "vårdgivare"',
        'roles = ["consumer", "producer"]', f"keys = {jwk}", "",
        "[[producers]]", 'id = "P1"', 'organisation = "ORG1"',
        f'types = ["{extra_type}"]', f"keys = {jwk}", "",
    ])


def test_registry_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(registry_text(), encoding="utf-8")
    assert main(["registry", "list", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ORG1" in out and "P1" in out and "OK (1 participants, 1 producers)" in out


def test_registry_list_names_retired_broker_keys(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    old = generate_key()
    jwk = "{ " + ", ".join(f'{k} = "{v}"' for k, v in old.public.to_jwk().items()) + " }"
    path = tmp_path / "registry.toml"
    path.write_text(registry_text().replace(
        '\n\n[[participants]]', f"\nretired_keys = [{{ key = {jwk}, last_seq = 12 }}]\n\n"
        "[[participants]]", 1), encoding="utf-8")
    assert main(["registry", "list", str(path)]) == 0
    broker_line = capsys.readouterr().out.splitlines()[0]
    assert broker_line.endswith(f"  retired: {old.kid} (checkpoints up to entry 12)")


def test_registry_error_names_the_line(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "registry.toml"
    text = registry_text(extra_type="x_rays")
    path.write_text(text, encoding="utf-8")
    assert main(["registry", "check", str(path)]) == 1
    err = capsys.readouterr().err
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "x_rays" in row)
    assert f"registry.toml:{line}:" in err and "x_rays" in err


def test_services_run_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("SAMSVAR_EVENT_LOOP", raising=False)
    assert event_loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("SAMSVAR_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None  # asyncio's own loop
    monkeypatch.setenv("SAMSVAR_EVENT_LOOP", "trio")
    with pytest.raises(CliError, match="SAMSVAR_EVENT_LOOP must be uvloop or asyncio"):
        event_loop_factory()


def test_keys_generate_force_over_a_world_readable_file_leaves_it_owner_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.jwk"
    out.write_text("{}")
    out.chmod(0o644)
    assert main(["keys", "generate", "--force", "--out", str(out)]) == 0
    assert load_private_key(out).kid == json.loads(capsys.readouterr().out)["kid"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", [None, 0o644, 0o666, 0o400])
def test_write_secret_is_owner_only_whatever_was_there(tmp_path: Path,
                                                       existing: int | None) -> None:
    path = tmp_path / "sub" / "secret"
    if existing is not None:
        path.parent.mkdir()
        path.write_bytes(b"an older and longer secret")
        path.chmod(existing | 0o200)  # writable by the owner, as --force needs
        path.chmod(existing | 0o200)
    write_secret(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"new"


def test_write_secret_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = tmp_path / "secret"
    link.symlink_to(target)
    with pytest.raises(OSError):
        write_secret(link, b"key")
    assert target.read_bytes() == b""


@pytest.mark.parametrize("role", ["broker", "adapter"])
def test_a_bad_mqtt_list_is_one_line_without_its_password(tmp_path: Path, role: str) -> None:
    """``samsvar broker|adapter --mqtt a,b`` replaces the config's servers; a malformed
    one is refused in one line that does not repeat the password it carried. (A process
    of its own: the command configures logging for the whole process.)"""
    import subprocess
    import sys

    from samsvar.demo import build_workdir
    from transport.settings import MqttSettings

    work = build_workdir(tmp_path / "w", port=0, mqtt=MqttSettings(), rivta=False)
    config = work.broker_config if role == "broker" else work.adapter_configs[0]
    done = subprocess.run([sys.executable, "-m", "samsvar", role, "--config", str(config),
                           "--mqtt", "mqtt://n1:1883,http://user:hunter2@n2:1883"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "mqtt://" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr + done.stdout
