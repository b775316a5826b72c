"""An auditor's bundle: exported from a node directory, verified elsewhere from the
file alone (a fresh process in an empty directory); an edited entry, a deleted
entry, an altered co-signature or a cut tail fails, naming the entry or checkpoint."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from concilium.cli import app
from concilium.errors import AuditError
from concilium.governance import audit_events as events
from concilium.governance.audit import AuditLog, cosign
from concilium.governance.audit_bundle import (
    export_bundle,
    is_bundle,
    verify_bundle,
    witnessed_of,
)
from concilium.governance.identity import load_signing_key
from tests.helpers_tls import Consortium, make_consortium

SOURCE = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()


@pytest.fixture
def consortium(tmp_path: Path) -> Consortium:
    """alpha's log of six entries, co-signed at four and six entries by bravo and
    charlie (who keep what they signed); alpha keeps a checkpoint of bravo's log."""
    consortium = make_consortium(tmp_path / "nodes")
    alpha, bravo, charlie = consortium.nodes
    keys = {node.name: load_signing_key(node) for node in consortium.nodes}
    log = AuditLog(alpha.directory / "audit.sqlite", "alpha", keys["alpha"])
    peers = {name: AuditLog(node.directory / "audit.sqlite", name, keys[name])
             for name, node in (("bravo", bravo), ("charlie", charlie))}
    written = [events.DatasetRegistered("admissions", 10, "csv", {}, "ab" * 32),
               events.Proposal("c1", {"query": "SELECT 1"}, "alpha"),
               events.RunStart("c1", 0, "rep3", {"model": "semi-honest"}),
               events.Abort("c1", "PeerUnavailable", "party 2 went silent"),
               events.Retry("c1"),
               events.Incident("bad_signature", "forged", ["bravo"], None)]
    for position, event in enumerate(written):
        log.record(event)
        if position in (3, 5):
            size, root = log.checkpoint()
            for name, peer in peers.items():
                log.add_cosignature(cosign(size, root, name, keys[name]))
                peer.witness("alpha", size, root)
    peers["bravo"].record(events.Retry("c2"))
    log.witness("bravo", *peers["bravo"].checkpoint())
    for opened in (log, *peers.values()):
        opened.close()
    return consortium


def _export(consortium: Consortium, name: str, out: Path, manifest: bool = True) -> Path:
    directory = consortium.root / name
    arguments = ["audit", "export", str(directory), "--out", str(out)]
    if manifest:
        arguments += ["--manifest", str(consortium.manifest_path)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return out


def _verify_elsewhere(bundle: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """``concilium audit verify`` in a fresh process, in an empty directory holding only
    the bundle (no node directory, no SQLite file, no manifest)."""
    clean = tmp_path / "elsewhere"
    clean.mkdir(exist_ok=True)
    (clean / "bundle.json").write_bytes(bundle.read_bytes())
    environment = {**os.environ, "PYTHONPATH": str(SOURCE)}
    return subprocess.run([sys.executable, "-m", "concilium.cli", "audit", "verify",
                           "bundle.json", *extra], cwd=clean, env=environment,
                          capture_output=True, text=True, timeout=120)


def _edited(bundle: Path, change: Any, tmp_path: Path, name: str) -> Path:
    data = json.loads(bundle.read_text())
    change(data)
    edited = tmp_path / name
    edited.write_text(json.dumps(data))
    return edited


def test_an_exported_bundle_verifies_from_the_file_alone(consortium: Consortium,
                                                          tmp_path: Path) -> None:
    bundle = _export(consortium, "alpha", tmp_path / "alpha.json")
    data = json.loads(bundle.read_text())
    assert data["format"] == "concilium-audit-bundle" and data["node"] == "alpha"
    assert data["public_key"] == consortium.nodes[0].signing_public_key
    assert data["manifest_hash"] == consortium.manifest.hash
    assert [e["index"] for e in data["entries"]] == list(range(6))
    assert set(data["entries"][0]) == {"index", "time", "kind", "body", "previous", "hash",
                                       "signature"}
    assert [(c["size"], c["signer"]) for c in data["checkpoints"]] == [
        (4, "bravo"), (4, "charlie"), (6, "bravo"), (6, "charlie")]
    assert [(w["node"], w["signer"]) for w in data["witnessed"]] == [("bravo", "alpha")]
    assert is_bundle(bundle) and not is_bundle(consortium.root / "alpha" / "audit.sqlite")

    done = _verify_elsewhere(bundle, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        "bundle.json: audit bundle of alpha, 6 entries, chain, signatures and checkpoints "
        "verified (4 co-signature(s) by bravo, charlie under the bundled manifest's keys; "
        "1 checkpoint(s) of other logs it keeps)")
    assert f"manifest hash {consortium.manifest.hash}" in done.stdout
    report = verify_bundle(bundle)
    assert (report.entries, report.checkpoints, report.keys) == (6, 4, "bundled")
    # the SQLite log still verifies through the same command, as before
    sqlite = runner.invoke(app, ["audit", "verify", str(consortium.root / "alpha" /
                                                        "audit.sqlite")])
    assert sqlite.exit_code == 0 and "6 entries, chain, signatures and checkpoints " \
                                      "verified" in sqlite.output


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["entries"][2]["body"].update(protocol="rep4"),
     "entry 2 was edited (its hash does not match)"),
    (lambda d: d["entries"].pop(2), "entry 2 is missing (the next entry is 3)"),
    (lambda d: d["entries"][4].update(signature=d["entries"][3]["signature"]),
     "entry 4 has a bad signature"),
    (lambda d: d["checkpoints"][1].update(signature=d["checkpoints"][0]["signature"]),
     "the checkpoint at 4 entries has a bad co-signature from 'charlie'"),
    (lambda d: d["checkpoints"][2].update(root=d["checkpoints"][0]["root"]),
     "the checkpoint at 6 entries co-signed by 'bravo' does not match the log"),
    (lambda d: d["witnessed"][0].update(size=2),
     "the checkpoint of 'bravo''s log at 2 entries that 'alpha' keeps is not signed"),
    (lambda d: d["manifest"]["party"][1].update(signing_key=d["manifest"]["party"][2][
        "signing_key"]), "does not match the manifest hash it states"),
    (lambda d: d["entries"][1].pop("hash"), "entry 1 of the bundle is malformed"),
])
def test_an_edited_bundle_fails_naming_the_entry_or_checkpoint(
        consortium: Consortium, tmp_path: Path, change: Any, message: str) -> None:
    bundle = _export(consortium, "alpha", tmp_path / "alpha.json")
    edited = _edited(bundle, change, tmp_path, "edited.json")
    with pytest.raises(AuditError) as raised:
        verify_bundle(edited)
    assert message in str(raised.value)
    shown = runner.invoke(app, ["audit", "verify", str(edited)])
    assert shown.exit_code == 2 and message in shown.output
    assert "Traceback" not in shown.output


def test_a_tampered_bundle_fails_in_a_fresh_process(consortium: Consortium,
                                                    tmp_path: Path) -> None:
    bundle = _export(consortium, "alpha", tmp_path / "alpha.json")
    edited = _edited(bundle, lambda d: d["entries"][3]["body"].update(
        reason="nothing happened"), tmp_path, "edited.json")
    done = _verify_elsewhere(edited, tmp_path)
    assert done.returncode == 2
    assert "entry 3 was edited (its hash does not match)" in done.stderr + done.stdout


def test_a_cut_tail_rebuilt_under_the_nodes_key_fails_against_a_peers_bundle(
        consortium: Consortium, tmp_path: Path) -> None:
    alpha = consortium.nodes[0]
    bundle = _export(consortium, "alpha", tmp_path / "alpha.json")
    peer = _export(consortium, "bravo", tmp_path / "bravo.json")
    assert [(w.node, w.size) for w in witnessed_of(peer)] == [("alpha", 4), ("alpha", 6)]
    # alpha drops its last two entries and the checkpoints that cover them: the chain
    # and its own signatures still hold, but bravo keeps a checkpoint at 6 entries

    def cut(data: dict[str, Any]) -> None:
        del data["entries"][4:]
        data["checkpoints"] = [c for c in data["checkpoints"] if c["size"] <= 4]

    cut_bundle = _edited(bundle, cut, tmp_path, "cut.json")
    assert verify_bundle(cut_bundle).entries == 4
    with pytest.raises(AuditError, match="keeps a checkpoint of 6 entries of 'alpha'"):
        verify_bundle(cut_bundle, against=witnessed_of(peer))
    shown = runner.invoke(app, ["audit", "verify", str(cut_bundle), "--against", str(peer)])
    assert shown.exit_code == 2 and "its tail was cut" in shown.output
    whole = runner.invoke(app, ["audit", "verify", str(bundle), "--against", str(peer)])
    assert whole.exit_code == 0 and "and 2 checkpoint(s) kept by peers" in whole.output
    assert alpha.name == "alpha"


def test_a_bundle_without_a_manifest_says_what_it_could_not_check(
        consortium: Consortium, tmp_path: Path) -> None:
    bundle = _export(consortium, "alpha", tmp_path / "alpha.json", manifest=False)
    assert json.loads(bundle.read_text())["manifest"] is None
    report = verify_bundle(bundle)
    assert report.keys == "none" and "co-signatures were not checked" in report.notes[0]
    # an altered co-signature passes without keys, and fails with the auditor's manifest
    edited = _edited(bundle, lambda d: d["checkpoints"][0].update(
        signature="00" * 64), tmp_path, "edited.json")
    assert verify_bundle(edited).entries == 6
    shown = runner.invoke(app, ["audit", "verify", str(edited), "--manifest",
                                str(consortium.manifest_path)])
    assert shown.exit_code == 2
    assert "the checkpoint at 4 entries has a bad co-signature from 'bravo'" in shown.output
    fine = runner.invoke(app, ["audit", "verify", str(bundle), "--manifest",
                               str(consortium.manifest_path)])
    assert fine.exit_code == 0 and f"the keys of {consortium.manifest_path}" in fine.output


def test_export_needs_a_node_and_verify_a_log_or_a_bundle(consortium: Consortium,
                                                          tmp_path: Path) -> None:
    missing = runner.invoke(app, ["audit", "export", str(tmp_path), "--out",
                                  str(tmp_path / "b.json")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    shown = runner.invoke(app, ["audit", "verify", str(other)])
    assert shown.exit_code == 2 and "Traceback" not in shown.output
    data = export_bundle(consortium.root / "alpha" / "audit.sqlite")
    changed = copy.deepcopy(data)
    changed["public_key"] = consortium.nodes[1].signing_public_key
    with pytest.raises(AuditError, match="entry 0 has a bad signature"):
        verify_bundle(changed)
