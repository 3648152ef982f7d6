"""Asset paths: shipped assets are recorded as ``assets/...`` and read back from any working directory."""
import os

from jaxhspace import world


def test_portable_path_round_trips_through_resolve_asset(tmp_path, monkeypatch):
    assert world.portable_path(world.DEFAULT_DDPM) == os.path.join("assets", "ddpm_synthfaces")
    assert world.portable_path(str(tmp_path)) == str(tmp_path)
    monkeypatch.chdir(tmp_path)                      # no assets/ here: resolve_asset finds the shipped copy
    rel = world.portable_path(os.path.join(world.ASSETS, "editors", "glasses"))
    assert rel == os.path.join("assets", "editors", "glasses")
    assert os.path.samefile(world.resolve_asset(rel), os.path.join(world.ASSETS, "editors", "glasses"))
    assert world.resolve_asset("assets/no_such_thing") == "assets/no_such_thing"


def test_load_model_reports_portable_source():
    *_, source = world.load_model("")
    assert source == os.path.join("assets", "ddpm_synthfaces")


def test_load_model_resolves_shipped_asset_paths_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    *_, source = world.load_model("assets/ddpm_synthfaces_refined")
    assert source == os.path.join("assets", "ddpm_synthfaces_refined")
