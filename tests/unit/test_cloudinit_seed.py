"""cloud-init seeds: the three NoCloud files as cloud-init reads them, and the ISO carrying them."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from corral.api import CloudInit
from corral.cloudinit import build_iso, default_hostname, instance_id, read_iso, render
from corral.cloudinit.yamlout import dump
from corral.errors import InvalidInput


def _key(kind: str = "ssh-ed25519", comment: str = "me@laptop") -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + b"\0" * 36
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


KEY = _key()
MAC = "52:54:00:AB:CD:EF"


def _yaml(text: str) -> Any:
    return yaml.safe_load(text)


def test_defaults_meta_data_user_data_network_config() -> None:
    files = render(instance="vm-1", hostname="web", ssh_authorized_keys=[KEY], mac=MAC)
    assert _yaml(files.meta_data) == {"instance-id": "vm-1", "local-hostname": "web"}
    assert files.user_data.startswith("#cloud-config\n")
    assert _yaml(files.user_data) == {"hostname": "web", "ssh_authorized_keys": [KEY]}
    assert _yaml(files.network_config or "") == {
        "version": 2,
        "ethernets": {"nic0": {"match": {"macaddress": MAC.lower()}, "dhcp4": True}},
    }
    # No NIC: no network-config (cloud-init then does its own fallback).
    assert render(instance="i", hostname="h").network_config is None


def test_hostname_and_instance_id_defaults() -> None:
    assert default_hostname("my_vm_") == "my-vm"
    assert default_hostname("web-1") == "web-1"
    assert default_hostname("_") == "vm"
    assert instance_id("abc") == "abc"
    assert instance_id("abc", 2) == "abc.2"


def test_cloud_config_user_data_is_merged() -> None:
    given = """#cloud-config
hostname: from-file
ssh_authorized_keys: [ "ssh-rsa OTHER x" ]
runcmd:
  - echo "it's ok" > /root/ran
  - [touch, "/tmp/a b"]
write_files:
  - path: /etc/motd
    content: |
      hello
      "world"
packages: [htop]
"""
    files = render(instance="i", hostname="vm-name", ssh_authorized_keys=[KEY], user_data=given)
    data = _yaml(files.user_data)
    assert files.user_data.startswith("#cloud-config\n")
    assert data["hostname"] == "from-file"  # the file's single values win
    assert data["ssh_authorized_keys"] == ["ssh-rsa OTHER x", KEY]  # lists are joined
    assert data["runcmd"] == ["echo \"it's ok\" > /root/ran", ["touch", "/tmp/a b"]]
    assert data["write_files"] == [{"path": "/etc/motd", "content": 'hello\n"world"\n'}]
    assert data["packages"] == ["htop"]


def test_user_gets_an_entry_after_default_and_the_password_hash() -> None:
    files = render(instance="i", hostname="h", user="alice", ssh_authorized_keys=[KEY],
                   password_hash="$6$saltsalt$hash")
    data = _yaml(files.user_data)
    assert data["users"] == ["default", {
        "name": "alice", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "ssh_authorized_keys": [KEY], "lock_passwd": False, "hashed_passwd": "$6$saltsalt$hash",
    }]
    assert "ssh_authorized_keys" not in data
    root = _yaml(render(instance="i", hostname="h", user="root", ssh_authorized_keys=[KEY]).user_data)
    assert root["disable_root"] is False


def test_password_hash_without_user_is_roots() -> None:
    data = _yaml(render(instance="i", hostname="h", password_hash="$6$saltsalt$hash").user_data)
    assert data["chpasswd"] == {"expire": False, "users": [
        {"name": "root", "password": "$6$saltsalt$hash", "type": "hash"}]}
    assert data["ssh_pwauth"] is True


def test_other_user_data_is_used_as_is_with_keys_in_meta_data() -> None:
    script = "#!/bin/sh\necho hi > /root/hi\n"
    files = render(instance="i", hostname="h", ssh_authorized_keys=[KEY], user_data=script)
    assert files.user_data == script
    assert _yaml(files.meta_data)["public-keys"] == [KEY]
    with pytest.raises(InvalidInput) as err:
        render(instance="i", hostname="h", user="bob", user_data=script)
    assert err.value.field == "cloud_init.user_data"


def test_user_network_config_is_kept_and_rewritten_in_our_shape() -> None:
    given = """network:
  version: 2
  ethernets:
    eth0: {addresses: [10.210.0.50/24], gateway4: 10.210.0.1, nameservers: {addresses: [10.210.0.1]}}
"""
    out = render(instance="i", hostname="h", network_config=given, mac=MAC).network_config or ""
    assert _yaml(out) == _yaml(given)["network"]  # unwrapped, as cloud-init does
    assert "{" not in out  # block style only: what the tiny guest's reader knows


def test_dump_shape_round_trips() -> None:
    data = {"a": "x: y # z", "b": [1, True, None, "é\n\"q\""], "c": {"d": [{"e": 1, "f": []}]},
            "weird key": {}, "argv": [["ls", "-l"]]}
    text = dump(data, header="#cloud-config")
    assert text.startswith("#cloud-config\n")
    assert _yaml(text) == data
    assert '"weird key": {}' in text and "  - [\"ls\", \"-l\"]" in text


def test_iso_has_label_cidata_and_the_files_by_their_real_names(tmp_path: Path) -> None:
    files = render(instance="i-9", hostname="h", ssh_authorized_keys=[KEY], mac=MAC).as_dict()
    data = build_iso(files)
    label, back = read_iso(data)
    assert label == "cidata"
    assert back == files
    iso = tmp_path / "seed.iso"
    iso.write_bytes(data)
    blkid = shutil.which("blkid") or "/sbin/blkid"
    if Path(blkid).exists():  # what a Linux guest sees (findfs LABEL=cidata)
        out = subprocess.run([blkid, "-o", "export", str(iso)], capture_output=True, text=True).stdout
        assert "LABEL=cidata" in out and "TYPE=iso9660" in out


def test_iso_refuses_unknown_files() -> None:
    with pytest.raises(InvalidInput):
        build_iso({"meta-data": "", "user-data": "", "vendor-data": ""})
    with pytest.raises(InvalidInput):
        build_iso({"user-data": ""})


# --------------------------------------------------------------------------- the API type


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"hostname": "bad_name"}, "hostname", "RFC 1123"),
        ({"hostname": "-x"}, "hostname", "RFC 1123"),
        ({"hostname": "a" * 64}, "hostname", "RFC 1123"),
        ({"user": "Root"}, "user", "user name"),
        ({"ssh_authorized_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]}, "ssh_authorized_keys",
         "SSH public key"),
        ({"ssh_authorized_keys": ["ssh-rsa AAAA"]}, "ssh_authorized_keys", "not a valid ssh-rsa"),
        ({"ssh_authorized_keys": [_key("ssh-rsa").replace("ssh-rsa ", "ssh-ed25519 ", 1)]},
         "ssh_authorized_keys", "not a valid ssh-ed25519"),
        ({"ssh_authorized_keys": [KEY + "\nssh-rsa x"]}, "ssh_authorized_keys", "one line"),
        ({"password_hash": "hunter2"}, "password_hash", "never a plain password"),
        ({"user_data": "  \n"}, "user_data", "empty"),
        ({"user_data": "#!/bin/sh\n" + "x" * (256 * 1024)}, "user_data", "at most 262144 characters"),
        ({"user_data": "#!/bin/sh\ntrue\n", "user": "bob"}, None, "merged"),
    ],
)
def test_bad_cloud_init_names_the_field(fields: dict[str, Any], field: str | None, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        CloudInit(**fields)
    first = err.value.errors()[0]
    if field is not None:
        assert first["loc"][0] == field
    assert words in str(first["msg"])


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"user_data": "#cloud-config\n- a list\n"}, "cloud_init.user_data", "mapping"),
        ({"user_data": "#cloud-config\nkey: [unclosed\n"}, "cloud_init.user_data", "not valid YAML"),
        ({"network_config": "ethernets: {}\n"}, "cloud_init.network_config", "version"),
    ],
)
def test_bad_documents_are_refused_when_rendered(fields: dict[str, Any], field: str, words: str) -> None:
    CloudInit(**fields)  # the API type checks sizes only: parsing is no work for the event loop
    with pytest.raises(InvalidInput) as err:
        render(instance="vm-1", hostname="web", **fields)
    assert err.value.field == field
    assert words in err.value.message


def test_good_cloud_init() -> None:
    ci = CloudInit(hostname="web.example.org", user="alice", ssh_authorized_keys=[KEY, _key("ssh-rsa")],
                   password_hash="$6$rounds=5000$abcdefgh$xyz", network_config="version: 1\nconfig: []\n",
                   user_data="#cloud-config\n")
    assert ci.ssh_authorized_keys[1].startswith("ssh-rsa ")
    with pytest.raises(ValidationError):
        CloudInit(unknown=1)  # type: ignore[call-arg]
