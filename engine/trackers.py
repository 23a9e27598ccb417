"""The experiment trackers `log:` names (AutoTrain's key and `--log` flag): which package each needs, what llmtune
calls the tracker's project and run, where it logs by default, and what is checked before a run starts.

transformers' own callbacks (`report_to`) log the trainer's metrics; the training process's side of a tracker
(its run, and what llmtune adds to it) is engine.trainers.tracking. A tracker that cannot work here is refused
before anything starts (`check_environment`, exit 2), never discovered after the model is loaded.

Secrets stay where the tracker keeps them: W&B's key comes from WANDB_API_KEY or `wandb login`, and llmtune
only checks that one exists; it never reads it into a config, an event or the run directory.

Light: no torch. `wandb` is imported only for `log: wandb`, to read its own settings (mode, login).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import Problem


@dataclass(frozen=True)
class Tracker:
    name: str  # the `log` value, and transformers' report_to name
    label: str
    module: str  # what must be importable
    package: str  # what pip installs
    extra: str | None  # llmtune's optional extra that installs it; None: installed with llmtune

    @property
    def install(self) -> str:
        if self.extra is None:
            return f"pip install {self.package}"
        return f"pip install 'llmtune[{self.extra}]' (in a checkout: pip install -e '.[{self.extra}]')"


TRACKERS: dict[str, Tracker] = {
    "tensorboard": Tracker("tensorboard", "TensorBoard", "tensorboard", "tensorboard", None),
    "wandb": Tracker("wandb", "W&B", "wandb", "wandb", "wandb"),
    "mlflow": Tracker("mlflow", "MLflow", "mlflow", "mlflow-skinny", "mlflow"),
    "trackio": Tracker("trackio", "Trackio", "trackio", "trackio", "trackio"),
}
# The environment variable that names the project, where the tracker has one (else: the run's name).
PROJECT_ENV = {"wandb": "WANDB_PROJECT", "mlflow": "MLFLOW_EXPERIMENT_NAME"}
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")  # nothing sent: no login needed


def installed(name: str) -> bool:
    """Whether the tracker's package can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(TRACKERS[name].module) is not None
    except (ImportError, ValueError):  # a broken install, or a module blanked in sys.modules
        return False


def installed_trackers() -> list[str]:
    return [name for name in TRACKERS if installed(name)]


def run_name(run_dir: Path) -> str:
    """The tracker's run name: the run directory's name (project_name's last part)."""
    return Path(run_dir).absolute().name or "llmtune-run"


def project(name: str, run_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """The tracker's project (MLflow: experiment): its environment variable, else the run's name."""
    environ = os.environ if environ is None else environ
    var = PROJECT_ENV.get(name)
    return (environ.get(var) if var else None) or run_name(run_dir)


def mlflow_uri(environ: Mapping[str, str] | None = None) -> str:
    """MLFLOW_TRACKING_URI, else a local `mlruns/` in the current directory (MLflow's own place for it; MLflow 3's
    default, an SQLite database, needs SQLAlchemy, which mlflow-skinny lacks)."""
    environ = os.environ if environ is None else environ
    return environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlruns").as_uri()


def is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("databricks", "sqlite:"))


def describe(cfg: Any, *, machine: bool = True, environ: Mapping[str, str] | None = None) -> str:
    """Where the run will be logged, said before it starts (the dry run, --yes, the wizard's review); the run's
    exact place (W&B's offline directory, its URL) is in the run_started event. `machine`: read W&B's own
    settings for its mode (the wizard does not, to stay quick)."""
    from engine.run_files import TENSORBOARD_DIR, run_dir_of

    environ = os.environ if environ is None else environ
    tracker, run_dir = TRACKERS[cfg.log], run_dir_of(cfg)
    names = f"project {project(cfg.log, run_dir, environ)}, run {run_name(run_dir)}"
    if cfg.log == "tensorboard":
        return f"TensorBoard: {environ.get('TENSORBOARD_LOGGING_DIR') or run_dir / TENSORBOARD_DIR}"
    if cfg.log == "wandb":
        settings = _wandb_settings() if machine and installed("wandb") else None
        mode = environ.get("WANDB_MODE") or (settings or {}).get("mode") or "online unless WANDB_MODE says"
        where = Path(environ.get("WANDB_DIR") or Path.cwd()).absolute() / "wandb"
        if mode in WANDB_LOCAL_MODES:
            return f"W&B {mode}: {names}, under {where} (wandb sync uploads it later)"
        return f"W&B {mode}: {names} (entity {environ.get('WANDB_ENTITY') or 'your default'}), files under {where}"
    if cfg.log == "mlflow":
        experiment = project("mlflow", run_dir, environ)
        return f"MLflow: {mlflow_uri(environ)}, experiment {experiment}, run {run_name(run_dir)}"
    remote = environ.get("TRACKIO_SPACE_ID") or environ.get("TRACKIO_SERVER_URL", "").split("?", 1)[0]
    home = Path(environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    where = remote or str(Path(environ.get("TRACKIO_DIR") or home / "trackio"))
    return f"{tracker.label}: {names}, {'logged to ' + where if remote else 'local, in ' + where}"


def environment_problems(cfg: Any, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """`log` names a tracker that cannot log from this machine: its package is missing, or it is set up so that
    the training process would fail (W&B online without a login, MLflow switched off or on a database backend
    whose driver is missing)."""
    tracker = TRACKERS.get(cfg.log)
    if tracker is None:
        return []  # none, or a value the static rules refuse
    environ = os.environ if environ is None else environ
    if not installed(tracker.name):
        return [cfg.problem("log", f"logs to {tracker.label}, which needs the {tracker.package} package; it is not "
                            "installed here", f"install it: {tracker.install}; or set log: none", cfg.log)]
    reason = {"wandb": _wandb_refusal, "mlflow": _mlflow_refusal}.get(tracker.name, lambda e: None)(environ)
    return [cfg.problem("log", reason[0], reason[1], cfg.log)] if reason else []


def _mlflow_refusal(environ: Mapping[str, str]) -> tuple[str, str] | None:
    if environ.get("DISABLE_MLFLOW_INTEGRATION", "").upper() == "TRUE":
        return ("logs to MLflow, but DISABLE_MLFLOW_INTEGRATION=TRUE switches transformers' MLflow logging off",
                "unset DISABLE_MLFLOW_INTEGRATION, or set log: none")
    uri = mlflow_uri(environ)
    db = uri.split(":", 1)[0].split("+", 1)[0]
    if db in ("sqlite", "postgresql", "mysql", "mssql") and importlib.util.find_spec("sqlalchemy") is None:
        return (f"logs to MLflow's {db} database (MLFLOW_TRACKING_URI), which needs SQLAlchemy; mlflow-skinny has "
                "none", "pip install mlflow (the full package), or point MLFLOW_TRACKING_URI at a server "
                "(http://...), or unset it for a local mlruns/")
    return None


def _wandb_refusal(environ: Mapping[str, str]) -> tuple[str, str] | None:
    mode = environ.get("WANDB_MODE")
    if mode is not None and mode not in WANDB_MODES:
        return (f"logs to W&B, but WANDB_MODE is {mode!r}, which W&B does not know",
                f"set WANDB_MODE to one of {', '.join(WANDB_MODES)} (offline logs without a network)")
    settings = _wandb_settings()
    mode = mode or (settings.get("mode") if settings else None) or "online"
    if mode in WANDB_LOCAL_MODES or settings is None:  # settings unreadable: W&B itself will say what is wrong
        return None
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE") or settings.get("logged_in"):
        return None
    return ("logs to W&B online (WANDB_MODE is not offline), and W&B has no API key here: the training process "
            "runs without a terminal, so W&B could not ask for one",
            "export WANDB_API_KEY=... (or run `wandb login` once); or log offline with WANDB_MODE=offline and "
            "upload later with `wandb sync`")


def _wandb_settings() -> dict[str, Any] | None:
    """W&B's own view of this machine, as wandb.init would see it (its settings files, the environment, the
    .netrc `wandb login` writes): the mode, and whether a key exists (never the key). None when it cannot be
    read (an unknown wandb version): nothing is refused then."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # "wandb: Loading settings from ..." is no problem
            from wandb.sdk import wandb_setup
            from wandb.sdk.lib.wbauth import read_netrc_auth

            settings = wandb_setup.singleton().settings
            key = settings.api_key or read_netrc_auth(host=settings.base_url)
            return {"mode": settings.mode, "logged_in": bool(key)}
    except Exception:  # noqa: BLE001 - W&B's internals move; a check that cannot tell must not refuse
        return None
