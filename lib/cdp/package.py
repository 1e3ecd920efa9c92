"""`cdp package`: one release folder holding everything spark-submit needs to run the jobs on a cluster.

Built once, deployed anywhere: nothing in it names a site. The master, the lakehouse locations and
the keys stay per deployment (the profile's ${VAR} references and the privacy keys, read at run time).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cdp.conf import ConfigError, Settings, load_settings, required_variables
from cdp.spark import jar_packages, release_conf, staged_jars

ZIP_NAME = "cdp.zip"
PROPERTIES_NAME = "spark.properties"
PACKAGES_NAME = "jars/packages.txt"
REQUIREMENTS_NAME = "requirements.txt"
RUNTIME_LOCK = "requirements/runtime.txt"  # every package the jobs import, pinned with hashes (`make lock`)


class ReleaseError(RuntimeError):
    """A build step failed; the message names the step, its output and the fix."""


@dataclass(frozen=True)
class Release:
    folder: Path
    profile: str
    variables: list[str]  # what each deployment must export before submitting

    @property
    def files(self) -> list[str]:
        """Every file of the release, relative to its folder, sorted."""
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


def build_release(out: Path, *, profile: str = "cluster", conf_dir: Path | None = None,
                  jars_dir: Path | None = None) -> Release:
    """Check the conf, then write wheel, cdp.zip, jobs, conf, jar list (and staged jars) and spark.properties.

    jars_dir defaults to <checkout>/jars/staged, included when it exists (`make jars`).
    """
    settings = load_settings(profile, conf_dir, expand=False)
    settings.validate_all()  # a broken conf must not be shipped
    properties = portable_properties(settings)
    packages = jar_packages(settings)
    jars = _jars_to_ship(settings.root, jars_dir, packages)
    _require_source_checkout(settings.root)
    _require_empty(out)

    out.mkdir(parents=True, exist_ok=True)
    zip_package(build_wheel(settings.root, out), out / ZIP_NAME)
    # The exact versions the driver's and executors' Python need: `pip install --require-hashes -r` it.
    shutil.copy2(settings.root / RUNTIME_LOCK, out / REQUIREMENTS_NAME)
    _copy_files(sorted((settings.root / "jobs").glob("*.py")), out / "jobs")
    _copy_files(sorted(p for p in settings.conf_dir.iterdir() if p.is_file()), out / "conf")
    _copy_files(jars, out / "jars")
    (out / PACKAGES_NAME).write_text("".join(f"{p}\n" for p in packages), encoding="utf-8")
    variables = deployment_variables(settings)
    write_properties(properties, out / PROPERTIES_NAME, profile, variables)
    return Release(out, profile, variables)


def _jars_to_ship(root: Path, jars_dir: Path | None, packages: list[str]) -> list[Path]:
    """The staged jars of --jars-dir, which must exist, else of jars/staged when `make jars` has filled it."""
    if jars_dir is not None and not jars_dir.is_dir():
        raise ConfigError(f"--jars-dir {jars_dir} is not a folder. Fix: run `make jars`, or leave --jars-dir out.")
    folder = jars_dir or root / "jars" / "staged"
    return staged_jars(folder, packages) if folder.is_dir() else []


def portable_properties(settings: Settings) -> dict[str, str]:
    """release_conf, refused when a value is still a ${VAR}: the file is the same for every deployment."""
    properties = release_conf(settings)
    unresolved = sorted(key for key, value in properties.items() if "${" in value)
    if unresolved:
        raise ConfigError(
            f"{settings.conf_dir / 'pipeline.yaml'}: profile '{settings.profile_name}' sets {unresolved} from "
            "environment variables, which a release built once for every deployment cannot hold. Fix: give them "
            f"literal values under profiles.{settings.profile_name}, or pass them with --conf when submitting."
        )
    return properties


def deployment_variables(settings: Settings) -> list[str]:
    """The profile's ${VAR} without a default, then the keys when the profile has no development keys."""
    names = [name for value in _strings(settings.profile.model_dump()) for name in required_variables(value)]
    if not settings.profile.dev_secrets:
        secrets = settings.privacy.secrets
        names += [secrets.hash_key_env, secrets.encryption_key_env]
    return list(dict.fromkeys(names))


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def build_wheel(root: Path, out: Path) -> Path:
    """`pip wheel --no-deps` from a clean copy of the sources, with the venv's locked setuptools.

    Building in the checkout would leave build/ and an egg-info there, and a stale build/lib can
    slip modules deleted since into the wheel. No build isolation: the build tools are the pinned
    ones of requirements/build.txt, not whatever PyPI serves that day.
    """
    with tempfile.TemporaryDirectory(prefix="cdp-wheel-") as tmp:
        source = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, source / name)
        shutil.copytree(root / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(out), str(source)],
            capture_output=True, text=True, check=False,
        )
    wheels = sorted(out.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise ReleaseError(
            f"`pip wheel --no-deps` of {root / 'pyproject.toml'} failed (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}\nFix: the error above; the build needs the pinned setuptools and wheel "
            "(`pip install --require-hashes -r requirements/build.txt`, which `make install` does)."
        )
    return wheels[0]


def zip_package(wheel: Path, target: Path) -> None:
    """The wheel's cdp/ tree as a zip for --py-files: exactly the modules the wheel installs."""
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zipped:
        for entry in source.infolist():
            if entry.filename.startswith("cdp/"):
                zipped.writestr(entry, source.read(entry))


def write_properties(properties: dict[str, str], target: Path, profile: str, variables: list[str]) -> None:
    """A file for `spark-submit --properties-file`, with a header saying what it leaves to each deployment."""
    header = [
        f"# Spark properties of profile '{profile}' (conf/pipeline.yaml), written by `cdp package`.",
        "# spark-submit reads this file instead of the cluster's conf/spark-defaults.conf unless you add",
        "# --load-spark-defaults. Set per deployment, not here: --master and --deploy-mode, and the",
        f"# environment of the driver: CDP_PROFILE={profile} (or --profile {profile}) and {', '.join(variables) or 'nothing else'}.",
        "# Executors hash and encrypt with the keys read from their own environment: give them the key",
        "# variables too, never as spark.executorEnv.* (docs/operations.md, \"Secrets on a cluster\").",
    ]
    lines = [f"{key}={_escape(value)}" for key, value in properties.items()]
    target.write_text("\n".join(header + lines) + "\n", encoding="utf-8")


def _escape(value: str) -> str:
    """Java properties read a backslash as an escape: double it so a regex or a Windows path survives."""
    return value.replace("\\", "\\\\")


def _copy_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, folder / file.name)


def _require_source_checkout(root: Path) -> None:
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(
            f"{root}: no pyproject.toml, so no wheel can be built here. Fix: run `cdp package` in the source "
            "checkout, or pass --conf-dir <checkout>/conf."
        )
    if not (root / RUNTIME_LOCK).is_file():
        raise ConfigError(
            f"{root / RUNTIME_LOCK} is missing: a release must name the locked versions its executors install. "
            "Fix: restore it from version control, or run `make lock`."
        )


def _require_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out} is not empty; a release must hold one build only. Fix: remove it first "
            "(`make package` does) or choose another folder."
        )
