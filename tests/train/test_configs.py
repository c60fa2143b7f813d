"""Every shipped config composes: the default, each experiment (its model instantiated on the meta device),
each trainer and model group, and the launchers (SLURM through submitit, torchrun)."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

REPO = Path(__file__).absolute().parents[2]
CONFIGS = REPO / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONFIGS / "trainer").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
PARAMS_15B = 15_299_419_136
RELEASE_PATHS = {"data.train_cache", "codec.checkpoint.codecs.video.path", "codec.checkpoint.codecs.audio.path",
                 "codec.checkpoint.codecs.text.path"}


def compose_train(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def meta_model(cfg):
    from train.app import model_config
    from horse.model import DiTModel

    with torch.device("meta"):
        return DiTModel(model_config(cfg), precision=cfg.model.precision)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_shipped_experiments_are_found():
    assert {"demo", "256p"} <= set(EXPERIMENTS) and {"cpu", "gpu", "ddp", "fsdp2"} <= set(TRAINERS)


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_experiment_composes_and_its_model_instantiates(experiment):
    cfg = compose_train(*([f"+experiment={experiment}"] if experiment else []))
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    model = meta_model(cfg)
    assert all(p.device.type == "meta" for p in model.parameters())
    if cfg.model.preset == "magihuman-15b":
        assert n_params(model) == PARAMS_15B
    from train.validation import export_config
    if not OmegaConf.missing_keys(cfg.codec):
        assert export_config(cfg).dit_config() == model.config  # what export writes builds the same DiT


def test_default_run_exports_the_demo_checkpoints_sampler():
    """configs/codec/demo.yaml and horse's demo_checkpoint_config state the same sampler defaults."""
    from horse.pipeline import demo_checkpoint_config
    from train.validation import export_config
    assert export_config(compose_train()).sampler == demo_checkpoint_config().sampler


def test_export_samples_audio_after_video_when_the_run_trained_v2a():
    from train.validation import export_config
    assert not export_config(compose_train()).sampler.audio_after_video
    assert export_config(compose_train("objective.v2a_probability=0.25")).sampler.audio_after_video
    explicit = compose_train("objective.v2a_probability=0.25", "+codec.checkpoint.sampler.audio_after_video=false")
    assert not export_config(explicit).sampler.audio_after_video  # the codec config's own choice wins


def test_export_config_carries_the_training_noise_prior():
    from train.validation import export_config
    cfg = compose_train("objective.noise.video_frame_correlation=0.5")
    assert export_config(cfg).video_frame_correlation == 0.5
    assert export_config(compose_train()).video_frame_correlation == 0.0


def test_default_and_demo_experiment_are_the_same_run():
    assert compose_train() == compose_train("+experiment=demo")


def test_demo_sync_is_the_release_conditioned_default_with_audio_windows_v2a_and_4800_steps_on_one_cosine():
    from train.app import model_config
    from train.validation import export_config

    default, sync = compose_train(), compose_train("+experiment=demo_sync")
    assert sync.trainer.max_steps == 4800 and sync.optim.total_steps == sync.trainer.max_steps
    assert list(sync.optim.cosine_ends) == [] and list(default.optim.cosine_ends) == [2400]  # as each was measured
    assert sync.objective.v2a_probability == 0.25 and export_config(sync).sampler.audio_after_video
    dit = model_config(sync)
    assert dit.audio_attn_layers == tuple(range(dit.num_layers)) and dit.audio_frame_window == 0
    assert not dit.caption_modulation and not dit.video_position_embedding  # as its results were measured
    by_hand = compose_train("name=demo_sync", "trainer.max_steps=4800", "trainer.cosine_ends=[]",
                            "objective.v2a_probability=0.25",
                            "++model.overrides={caption_modulation: false, video_position_embedding: false, "
                            "audio_attn_layers: all, audio_frame_window: 0}")
    assert sync == by_hand  # nothing else differs from the default run


def test_256p_is_the_15b_with_release_codecs_and_declares_its_required_paths():
    cfg = compose_train("+experiment=256p")
    model = meta_model(cfg)
    assert n_params(model) == PARAMS_15B and cfg.model.precision == "mixed"
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.strategy == "deepspeed_zero3"
    assert set(OmegaConf.missing_keys(cfg)) == RELEASE_PATHS
    filled = compose_train("+experiment=256p", "data.train_cache=/data/train",
                           *(f"{k}=/models/{k.split('.')[-2]}" for k in sorted(RELEASE_PATHS - {"data.train_cache"})))
    assert not OmegaConf.missing_keys(filled)


def _cpu_256p(tmp_path):
    # the 256p recipe with a demo-sized model on CPU, so that a run gets past the machine check to its paths
    return compose_train("+experiment=256p", "model=demo", "trainer=cpu", "plan.device_memory_gib=1000",
                         "logger.wandb.enabled=false", f"output_root={tmp_path}")


def test_256p_plan_needs_no_paths(capsys):
    from train.app import run

    result = run(compose_train("+experiment=256p", "plan_only=true"))
    assert result["plan"]["parameters"] == PARAMS_15B and "devices needed" in capsys.readouterr().out


def test_256p_missing_path_is_named_at_run_time(tmp_path):
    from train.app import run

    cfg = _cpu_256p(tmp_path)
    with pytest.raises((MissingMandatoryValue, ValueError), match=r"data\.train_cache"):
        run(cfg)


def test_256p_all_missing_paths_are_named_up_front(tmp_path):
    from train.app import run

    cfg = _cpu_256p(tmp_path)
    with pytest.raises(ValueError) as err:
        run(cfg)
    assert all(key in str(err.value) for key in RELEASE_PATHS)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_composes(trainer):
    from train.strategies import STRATEGIES

    cfg = compose_train(f"trainer={trainer}")
    t = cfg.trainer
    assert t.strategy in STRATEGIES and t.accelerator in ("cpu", "gpu")
    assert int(t.devices) >= 1 and int(t.num_nodes) >= 1 and t.max_nonfinite >= 1 and t.keep_last >= 1


@pytest.mark.parametrize("model", MODELS)
def test_every_model_group_instantiates(model):
    cfg = compose_train(f"model={model}")
    assert n_params(meta_model(cfg)) > 0


def test_slurm_launcher_composes_into_an_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes with the 256p experiment; its parameters, passed to submitit the way
    Hydra's launcher passes them (``BaseSubmititLauncher.launch``), give the expected sbatch header."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_train("hydra/launcher=slurm", "+experiment=256p", hydra=True)
    assert cfg.hydra.launcher.partition is None  # the cluster's default partition unless set
    cfg = compose_train("hydra/launcher=slurm", "+experiment=256p", "trainer.num_nodes=2",
                        "hydra.launcher.partition=gpu", hydra=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True, throw_on_missing=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    fake_bin = tmp_path / "bin"  # submitit looks for srun before it writes a script
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{__import__('os').environ['PATH']}")
    base, init_keys = set(OmegaConf.structured(BaseQueueConf).keys()), {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in init_keys})
    script = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu",
                 "--job-name=magihuman-256p", "--time=4320"):
        assert f"#SBATCH {line}" in script, line


def test_torchrun_launcher_takes_the_shape_from_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "4")
    cfg = compose_train("+experiment=256p", "+launcher=torchrun")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (8, 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.delenv("GROUP_WORLD_SIZE")
    cfg = compose_train("+launcher=torchrun")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (1, 1)


def test_launcher_files_are_tested():
    """A new launcher config must be added to the tests above."""
    shipped = {p.relative_to(CONFIGS).as_posix() for folder in ("hydra/launcher", "launcher")
               for p in (CONFIGS / folder).glob("*.yaml")}
    assert shipped == {"hydra/launcher/slurm.yaml", "launcher/torchrun.yaml"}
