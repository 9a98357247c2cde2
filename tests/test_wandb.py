from bench.cli import main


def test_wandb_offline_writes_a_local_run_with_the_records_table(run_args, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    assert main(run_args("--wandb", "offline", "--attack", "fgsm", "--eps", "0.3")) == 0
    runs = list((run_args.results / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = [p.name for p in runs[0].rglob("*")]
    assert any(name.endswith(".wandb") for name in files)
    tables = [p for p in runs[0].rglob("*.table.json")]
    assert tables and "defended_adv_acc" in tables[0].read_text()


def test_wandb_bad_mode(run_args, capsys):
    assert main(run_args("--wandb", "sometimes")) == 2
    assert "invalid wandb mode" in capsys.readouterr().err
